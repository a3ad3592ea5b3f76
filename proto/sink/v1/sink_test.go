package sinkpb_test

import (
	"testing"

	sinkpb "github.com/kube-git-deploy/kube-git-deploy/proto/sink/v1"
)

// TestDescriptor pins the names receivers implement: the service, its
// one client-streaming method and the Skaffold v2 Event it carries.
func TestDescriptor(t *testing.T) {
	fd := sinkpb.File_sink_v1_sink_proto
	if got, want := string(fd.Package()), "kgd.sink.v1"; got != want {
		t.Errorf("package = %q, want %q", got, want)
	}
	svc := fd.Services().ByName("EventSink")
	if svc == nil || svc.Methods().Len() != 1 {
		t.Fatalf("service EventSink with one method not found in %s", fd.Path())
	}
	m := svc.Methods().Get(0)
	if got, want := string(m.Name()), "Send"; got != want {
		t.Errorf("method = %q, want %q", got, want)
	}
	if !m.IsStreamingClient() || m.IsStreamingServer() {
		t.Errorf("Send streams client %t, server %t; want client only", m.IsStreamingClient(), m.IsStreamingServer())
	}
	if got, want := string(m.Input().FullName()), "proto.v2.Event"; got != want {
		t.Errorf("input = %q, want %q", got, want)
	}
	if got, want := string(m.Output().FullName()), "google.protobuf.Empty"; got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
	if got, want := sinkpb.EventSink_Send_FullMethodName, "/kgd.sink.v1.EventSink/Send"; got != want {
		t.Errorf("full method name = %q, want %q", got, want)
	}
}
