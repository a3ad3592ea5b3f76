// Package proto_test checks that the generated Skaffold API code is
// wire-compatible with Skaffold: descriptor names and numbers, and the JSON
// the HTTP gateway writes.
package proto_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
)

// gatewayMarshaler is the marshaler Skaffold's gateway uses (reference §4.2).
func gatewayMarshaler() runtime.Marshaler {
	return &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	}}
}

var ts = timestamppb.New(time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC))

func TestGatewayJSON(t *testing.T) {
	m := gatewayMarshaler()
	tests := []struct {
		name string
		msg  proto.Message
		// want is the JSON the reference shows for the message.
		want string
	}{
		{
			name: "v1-log-entry",
			msg: &v1pb.LogEntry{Timestamp: ts, Entry: "Build started for artifact img", Event: &v1pb.Event{
				EventType: &v1pb.Event_BuildEvent{BuildEvent: &v1pb.BuildEvent{
					Artifact: "img", Status: "In Progress", HostPlatform: "linux/amd64", TargetPlatforms: "linux/amd64"}}}},
			want: `{"timestamp":"2024-01-02T03:04:05.123456789Z","event":{"buildEvent":{"artifact":"img","status":"In Progress","err":"","errCode":"OK","actionableErr":null,"hostPlatform":"linux/amd64","targetPlatforms":"linux/amd64"}},"entry":"Build started for artifact img"}`,
		},
		{
			name: "v2-event",
			msg: &v2pb.Event{Timestamp: ts, EventType: &v2pb.Event_BuildSubtaskEvent{BuildSubtaskEvent: &v2pb.BuildSubtaskEvent{
				Id: "img", TaskId: "Build-1", Artifact: "img", Step: "Build", Status: "InProgress"}}},
			want: `{"timestamp":"2024-01-02T03:04:05.123456789Z","buildSubtaskEvent":{"id":"img","task_id":"Build-1","artifact":"img","step":"Build","status":"InProgress","actionableErr":null,"hostPlatform":"","targetPlatforms":""}}`,
		},
		{
			name: "v2-log-event",
			msg: &v2pb.Event{Timestamp: ts, EventType: &v2pb.Event_SkaffoldLogEvent{SkaffoldLogEvent: &v2pb.SkaffoldLogEvent{
				TaskId: "Build-1", SubtaskId: "img", Level: enumspb.LogLevel_STANDARD, Message: "Step 1/2\n"}}},
			want: `{"timestamp":"2024-01-02T03:04:05.123456789Z","skaffoldLogEvent":{"task_id":"Build-1","subtask_id":"img","level":"STANDARD","message":"Step 1/2\n"}}`,
		},
		{
			name: "v1-state-maps",
			msg: &v1pb.State{ForwardedPorts: map[int32]*v1pb.PortEvent{9000: {LocalPort: 9000}},
				BuildState: &v1pb.BuildState{Artifacts: map[string]string{"img": "Complete"}, AutoTrigger: true}},
			want: `{"buildState":{"artifacts":{"img":"Complete"},"autoTrigger":true,"statusCode":"OK"},"deployState":null,"forwardedPorts":{"9000":{"localPort":9000,"remotePort":0,"podName":"","containerName":"","namespace":"","portName":"","resourceType":"","resourceName":"","address":"","targetPort":null}},"statusCheckState":null,"fileSyncState":null,"debuggingContainers":[],"metadata":null,"testState":null}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := m.Marshal(tt.msg)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			// protojson may vary whitespace; compare parsed JSON.
			var got, want any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("gateway JSON does not parse: %v\n%s", err, b)
			}
			if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("gateway JSON (-want +got):\n%s", diff)
			}
			// And back: the same message, with unknown keys ignored.
			back := tt.msg.ProtoReflect().New().Interface()
			withUnknown := strings.Replace(string(b), "{", `{"someFutureField":1,`, 1)
			if err := m.Unmarshal([]byte(withUnknown), back); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if diff := cmp.Diff(tt.msg, back, protocmp.Transform()); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDescriptors pins the facts Skaffold clients depend on: package,
// service and method names, field numbers and enum sizes.
func TestDescriptors(t *testing.T) {
	v1 := v1pb.File_v1_skaffold_proto
	v2 := v2pb.File_v2_skaffold_proto
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"v1 package", v1.Package(), protoreflect.FullName("proto")},
		{"v2 package", v2.Package(), protoreflect.FullName("proto.v2")},
		{"enums package", enumspb.File_enums_enums_proto.Package(), protoreflect.FullName("proto.enums")},
		{"v1 service", v1.Services().Get(0).FullName(), protoreflect.FullName("proto.SkaffoldService")},
		{"v2 service", v2.Services().Get(0).FullName(), protoreflect.FullName("proto.v2.SkaffoldV2Service")},
		{"v1 methods", methods(v1.Services().Get(0)), "GetState EventLog Events Execute AutoBuild AutoSync AutoDeploy Handle"},
		{"v2 methods", methods(v2.Services().Get(0)), "GetState Events ApplicationLogs Execute AutoBuild AutoSync AutoDeploy Handle"},
		{"StatusCode values", enumspb.StatusCode(0).Descriptor().Values().Len(), 210},
		{"SuggestionCode values", enumspb.SuggestionCode(0).Descriptor().Values().Len(), 73},
		{"KUBECTL_VERSION_ERR", int32(enumspb.StatusCode_DEPLOY_KUBECTL_VERSION_ERR), int32(1109)},
		{"v1 TestEvent field", fieldNumber((&v1pb.Event{}).ProtoReflect().Descriptor(), "TestEvent"), 11},
		{"v1 Metadata.additional", fieldNumber((&v1pb.Metadata{}).ProtoReflect().Descriptor(), "additional"), 99},
		{"v1 State reserved 3", (&v1pb.State{}).ProtoReflect().Descriptor().Fields().ByNumber(3) == nil, true},
		{"v2 Event.timestamp outside oneof", (&v2pb.Event{}).ProtoReflect().Descriptor().Fields().ByNumber(1).ContainingOneof() == nil, true},
		{"v2 execEvent", fieldNumber((&v2pb.Event{}).ProtoReflect().Descriptor(), "execEvent"), 17},
		{"v2 SkaffoldLogEvent.level", fieldNumber((&v2pb.SkaffoldLogEvent{}).ProtoReflect().Descriptor(), "level"), 4},
		{"v2 task_id json name", (&v2pb.BuildSubtaskEvent{}).ProtoReflect().Descriptor().Fields().ByName("task_id").JSONName(), "taskId"},
		{"v2 Metadata.runID", fieldNumber((&v2pb.Metadata{}).ProtoReflect().Descriptor(), "runID"), 4},
		// Skaffold's fields plus kube-git-deploy's one opt-in addition.
		{"v1 LogEntry fields", fields((&v1pb.LogEntry{}).ProtoReflect().Descriptor()),
			"1 timestamp, 2 event, 3 entry, 1000 kgd_sequence (optional int64)"},
		{"v2 Event fields", fields((&v2pb.Event{}).ProtoReflect().Descriptor()),
			"1 timestamp, 2 metaEvent, 3 skaffoldLogEvent, 4 applicationLogEvent, 5 taskEvent, 6 buildSubtaskEvent, 7 deploySubtaskEvent, " +
				"8 portEvent, 9 statusCheckSubtaskEvent, 10 fileSyncEvent, 11 debuggingContainerEvent, 12 terminationEvent, 13 testEvent, " +
				"14 renderEvent, 15 verifyEvent, 16 cloudRunReadyEvent, 17 execEvent, 1000 kgd_sequence (optional int64)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// fields lists d's fields as "number name", marking proto3 optional ones.
func fields(d protoreflect.MessageDescriptor) string {
	var out []string
	for i := 0; i < d.Fields().Len(); i++ {
		f := d.Fields().Get(i)
		s := fmt.Sprintf("%d %s", f.Number(), f.Name())
		if f.HasOptionalKeyword() {
			s += fmt.Sprintf(" (optional %s)", f.Kind())
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

// TestOnlyAdditions: kgd_sequence on v1 LogEntry and v2 Event are the
// only fields that are not Skaffold's: every other field of every message
// is numbered as Skaffold numbers (at most 99) and has no proto3
// optional keyword, and no other message has a synthetic oneof.
func TestOnlyAdditions(t *testing.T) {
	var got []string
	var walk func(protoreflect.MessageDescriptors)
	walk = func(ms protoreflect.MessageDescriptors) {
		for i := 0; i < ms.Len(); i++ {
			m := ms.Get(i)
			for j := 0; j < m.Fields().Len(); j++ {
				if f := m.Fields().Get(j); f.Number() > 99 || f.HasOptionalKeyword() {
					got = append(got, fmt.Sprintf("%s=%d", f.FullName(), f.Number()))
				}
			}
			for j := 0; j < m.Oneofs().Len(); j++ {
				if o := m.Oneofs().Get(j); o.IsSynthetic() && o.Name() != "_kgd_sequence" {
					got = append(got, "oneof "+string(o.FullName()))
				}
			}
			walk(m.Messages())
		}
	}
	walk(v1pb.File_v1_skaffold_proto.Messages())
	walk(v2pb.File_v2_skaffold_proto.Messages())
	walk(enumspb.File_enums_enums_proto.Messages())
	if diff := cmp.Diff([]string{"proto.LogEntry.kgd_sequence=1000", "proto.v2.Event.kgd_sequence=1000"}, got); diff != "" {
		t.Errorf("fields beyond Skaffold's (-want +got):\n%s", diff)
	}
}

// TestSequenceOptIn: kgd_sequence unset leaves the gateway JSON and the
// binary encoding exactly Skaffold's (EmitUnpopulated does not emit a
// proto3 optional field); set, it is one more JSON key (an int64, so a
// string) and one more binary field, which a client built from Skaffold's
// own schema keeps as an unknown field and otherwise ignores.
func TestSequenceOptIn(t *testing.T) {
	m := gatewayMarshaler()
	seq := int64(42)
	v1 := &v1pb.LogEntry{Timestamp: ts, Entry: "x", Event: &v1pb.Event{EventType: &v1pb.Event_DeployEvent{DeployEvent: &v1pb.DeployEvent{Status: "Complete"}}}}
	v2 := &v2pb.Event{Timestamp: ts, EventType: &v2pb.Event_TaskEvent{TaskEvent: &v2pb.TaskEvent{Id: "Build-1", Task: "Build", Iteration: 1, Status: "InProgress"}}}
	for _, tc := range []struct {
		name       string
		unset, set proto.Message
		file       protoreflect.FileDescriptor
	}{
		{"v1", v1, &v1pb.LogEntry{Timestamp: v1.Timestamp, Event: v1.Event, Entry: v1.Entry, KgdSequence: &seq}, v1pb.File_v1_skaffold_proto},
		{"v2", v2, &v2pb.Event{Timestamp: v2.Timestamp, EventType: v2.EventType, KgdSequence: &seq}, v2pb.File_v2_skaffold_proto},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unset, err := m.Marshal(tc.unset)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(unset), "kgd_sequence") || strings.Contains(string(unset), "kgdSequence") {
				t.Errorf("unset kgd_sequence is emitted: %s", unset)
			}
			set, err := m.Marshal(tc.set)
			if err != nil {
				t.Fatal(err)
			}
			var u, s map[string]any
			if err := json.Unmarshal(unset, &u); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(set, &s); err != nil {
				t.Fatal(err)
			}
			if s["kgd_sequence"] != "42" {
				t.Errorf("set: kgd_sequence = %#v in %s, want \"42\"", s["kgd_sequence"], set)
			}
			delete(s, "kgd_sequence")
			if diff := cmp.Diff(u, s); diff != "" {
				t.Errorf("set and unset differ in more than kgd_sequence (-unset +set):\n%s", diff)
			}

			// A client generated from Skaffold's schema: the same file
			// without field 1000.
			fdp := protodesc.ToFileDescriptorProto(tc.file)
			name := tc.unset.ProtoReflect().Descriptor().Name()
			for _, mp := range fdp.MessageType {
				if mp.GetName() == string(name) {
					mp.Field = slices.DeleteFunc(mp.Field, func(f *descriptorpb.FieldDescriptorProto) bool { return f.GetNumber() == 1000 })
					mp.OneofDecl = slices.DeleteFunc(mp.OneofDecl, func(o *descriptorpb.OneofDescriptorProto) bool { return o.GetName() == "_kgd_sequence" })
				}
			}
			skaffold, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
			if err != nil {
				t.Fatal(err)
			}
			bin, err := proto.Marshal(tc.set)
			if err != nil {
				t.Fatal(err)
			}
			old := dynamicpb.NewMessage(skaffold.Messages().ByName(name))
			if err := proto.Unmarshal(bin, old); err != nil {
				t.Fatalf("Skaffold's schema cannot read the message with kgd_sequence: %v", err)
			}
			if len(old.GetUnknown()) == 0 {
				t.Error("kgd_sequence is not kept as an unknown field")
			}
			old.SetUnknown(nil)
			got, err := m.Marshal(old)
			if err != nil {
				t.Fatal(err)
			}
			var g map[string]any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(u, g); diff != "" {
				t.Errorf("Skaffold's schema reads a different message (-want +got):\n%s", diff)
			}
			plain, _ := proto.Marshal(tc.unset)
			want := dynamicpb.NewMessage(skaffold.Messages().ByName(name))
			if err := proto.Unmarshal(plain, want); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(want, old) {
				t.Errorf("Skaffold's schema reads %v, want %v", old, want)
			}
		})
	}
}

func methods(s protoreflect.ServiceDescriptor) string {
	var names []string
	for i := 0; i < s.Methods().Len(); i++ {
		names = append(names, string(s.Methods().Get(i).Name()))
	}
	return strings.Join(names, " ")
}

func fieldNumber(d protoreflect.MessageDescriptor, name string) int {
	f := d.Fields().ByName(protoreflect.Name(name))
	if f == nil {
		return -1
	}
	return int(f.Number())
}

// fakeV1 streams two fixed entries, then ends.
type fakeV1 struct {
	v1pb.UnimplementedSkaffoldServiceServer
}

func (fakeV1) Events(_ *emptypb.Empty, s grpc.ServerStreamingServer[v1pb.LogEntry]) error {
	for _, st := range []string{"In Progress", "Complete"} {
		if err := s.Send(&v1pb.LogEntry{Timestamp: ts, Event: &v1pb.Event{EventType: &v1pb.Event_DeployEvent{DeployEvent: &v1pb.DeployEvent{Status: st}}}}); err != nil {
			return err
		}
	}
	return nil
}

// TestGatewayStreamFraming serves a real gRPC server and the generated
// gateway on loopback and checks the framing of a streamed response.
func TestGatewayStreamFraming(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	v1pb.RegisterSkaffoldServiceServer(srv, fakeV1{})
	go srv.Serve(lis)
	defer srv.Stop()

	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, gatewayMarshaler()))
	if err := v1pb.RegisterSkaffoldServiceHandlerFromEndpoint(ctx, mux, lis.Addr().String(),
		[]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(mux)
	defer hs.Close()

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+"/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/events = %s %q, want 200 application/json", resp.Status, resp.Header.Get("Content-Type"))
	}
	if got := resp.TransferEncoding; len(got) != 1 || got[0] != "chunked" {
		t.Errorf("Transfer-Encoding = %v, want chunked", got)
	}
	var statuses []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var frame struct {
			Result struct {
				Event struct {
					DeployEvent map[string]any `json:"deployEvent"`
				} `json:"event"`
			} `json:"result"`
		}
		if err := json.Unmarshal(sc.Bytes(), &frame); err != nil {
			t.Fatalf("frame %q: %v", sc.Text(), err)
		}
		d := frame.Result.Event.DeployEvent
		if _, ok := d["errCode"]; !ok {
			t.Errorf("frame %q lacks unpopulated errCode", sc.Text())
		}
		statuses = append(statuses, d["status"].(string))
	}
	if diff := cmp.Diff([]string{"In Progress", "Complete"}, statuses); diff != "" {
		t.Errorf("streamed statuses (-want +got):\n%s", diff)
	}
}
