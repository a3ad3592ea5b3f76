package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// testStore opens the store of project as the service does (testEnv's key).
func testStore(t *testing.T, project string) *store.Store {
	t.Helper()
	fs, err := firestore.NewClient(context.Background(), project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	box, err := secret.NewBox(make([]byte, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(fs, box)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// send makes one HTTP request with the given Host (empty: the URL's),
// Content-Type and Origin; it returns the status and the body.
func send(t *testing.T, method, url, host, contentType, origin, body string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestLocalGatewayGuard: locally the gateway refuses what a web page could
// send — a foreign Host (DNS rebinding) and a state-changing request
// without a JSON body — in google.rpc.Status JSON, and changes nothing;
// loopback JSON requests work, and gRPC (its own port) is not affected.
func TestLocalGatewayGuard(t *testing.T) {
	grpcPort, httpPort := freePort(t), freePort(t)
	httpAddr := "127.0.0.1:" + strconv.Itoa(httpPort)
	project := emulatortest.ProjectID(t)
	start(t, []string{"--rpc-port", strconv.Itoa(grpcPort), "--rpc-http-port", strconv.Itoa(httpPort)}, testEnv(project, nil), httpAddr)
	st := testStore(t, project)
	ctx := context.Background()
	if err := st.TrackRepository(ctx, store.Repository{Owner: "octo", Name: "app", HookID: 1, WebhookSecret: []byte("s"), TrackedBy: "octocat",
		Triggers: store.Triggers{AutoBuild: false, AutoDeploy: true, AutoSync: true}}); err != nil {
		t.Fatal(err)
	}
	pending, err := st.CreateJob(ctx, store.Job{Owner: "octo", Name: "app", Ref: "refs/heads/main", SHA: strings.Repeat("1", 40), DeliveryID: "d-1", Trigger: "push", Status: store.StatusPending})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + httpAddr
	execute := base + "/v1/execute?repository=octo/app"
	autoBuild := base + "/v1/build/auto_execute?repository=octo/app"
	for _, tc := range []struct {
		name, method, url, host, ct, origin, body string
		code, rpcCode                             int
	}{
		{"page-text-plain", http.MethodPost, execute, "", "text/plain;charset=UTF-8", "https://evil.example", `{"build":true}`, 415, 3},
		{"page-form", http.MethodPost, execute, "", "application/x-www-form-urlencoded", "https://evil.example", `{"build":true}`, 415, 3},
		{"page-no-body", http.MethodPost, execute, "", "", "https://evil.example", "", 415, 3},
		{"page-form-put", http.MethodPut, autoBuild, "", "application/x-www-form-urlencoded", "null", `{"enabled":true}`, 415, 3},
		{"page-handle", http.MethodPost, base + "/v2/events/handle?repository=octo/app", "", "text/plain", "https://evil.example", `{"taskEvent":{"id":"X"}}`, 415, 3},
		{"rebinding", http.MethodPost, execute, "evil.example:5000", "application/json", "", `{"build":true}`, 421, 7},
		{"rebinding-put", http.MethodPut, autoBuild, "evil.example:50052", "application/json", "", `{"enabled":true}`, 421, 7},
		{"rebinding-read", http.MethodGet, base + "/v1/state?repository=octo/app", "evil.example", "", "", "", 421, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := send(t, tc.method, tc.url, tc.host, tc.ct, tc.origin, tc.body, nil)
			var st struct {
				Code    int             `json:"code"`
				Message string          `json:"message"`
				Details json.RawMessage `json:"details"`
			}
			if code != tc.code || json.Unmarshal([]byte(body), &st) != nil || st.Code != tc.rpcCode || st.Message == "" || string(st.Details) != "[]" {
				t.Errorf("%s %s (Host %q, Content-Type %q): %d %s; want %d with a google.rpc.Status of code %d", tc.method, tc.url, tc.host, tc.ct, code, body, tc.code, tc.rpcCode)
			}
		})
	}
	j, err := st.Job(ctx, pending.ID)
	if err != nil || j.Status != store.StatusPending {
		t.Errorf("after refused requests the pending job is %s (%v)", j.Status, err)
	}
	r, err := st.Repository(ctx, "octo", "app")
	if err != nil || r.Triggers.AutoBuild {
		t.Errorf("after refused requests the triggers are %+v (%v)", r.Triggers, err)
	}

	// The same requests from a loopback client with JSON work.
	for _, host := range []string{"", "localhost:" + strconv.Itoa(httpPort), "[::1]:" + strconv.Itoa(httpPort)} {
		if code, body := send(t, http.MethodGet, base+"/v1/state?repository=octo/app", host, "", "", "", nil); code != 200 {
			t.Errorf("GET /v1/state with Host %q: %d %s", host, code, body)
		}
	}
	if code, body := send(t, http.MethodPost, execute, "localhost:"+strconv.Itoa(httpPort), "application/json", "", `{"build":true}`, nil); code != 200 {
		t.Errorf("loopback JSON execute: %d %s", code, body)
	}
	if j, err := st.Job(ctx, pending.ID); err != nil || j.Status != store.StatusQueued {
		t.Errorf("after a loopback JSON execute the job is %s (%v), want queued", j.Status, err)
	}
	if code, body := send(t, http.MethodPut, autoBuild, "", "application/json; charset=utf-8", "", `{"enabled":true}`, nil); code != 200 {
		t.Errorf("loopback JSON auto build: %d %s", code, body)
	}

	// gRPC has its own port; a browser cannot speak it.
	cc, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(grpcPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := v1pb.NewSkaffoldServiceClient(cc).GetState(ctx, &emptypb.Empty{}); err != nil {
		t.Errorf("gRPC GetState: %v", err)
	}
}

// TestIAMMode: with KGD_AUTH=iam callers need an identity token; the
// loopback guard is off (Cloud Run IAM fronts the service).
func TestIAMMode(t *testing.T) {
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	project := emulatortest.ProjectID(t)
	start(t, nil, testEnv(project, map[string]string{"PORT": strconv.Itoa(port), "KGD_AUTH": "iam", "KGD_OPERATORS": "ops@example.com"}), addr)
	st := testStore(t, project)
	if err := st.TrackRepository(context.Background(), store.Repository{Owner: "octo", Name: "app", HookID: 1, WebhookSecret: []byte("s"), TrackedBy: "octocat",
		Triggers: store.Triggers{AutoBuild: true, AutoDeploy: true, AutoSync: true}}); err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	token := func(email string) http.Header {
		claims := fmt.Sprintf(`{"email":%q,"email_verified":true,"exp":%d}`, email, time.Now().Add(time.Hour).Unix())
		return http.Header{"Authorization": {"Bearer " + enc([]byte(`{}`)) + "." + enc([]byte(claims)) + ".sig"}}
	}
	if code, body := send(t, http.MethodGet, "http://"+addr+"/v1/state", "", "", "", "", nil); code != 401 {
		t.Errorf("no token: %d %s, want 401", code, body)
	}
	if code, body := send(t, http.MethodGet, "http://"+addr+"/v1/state", "kgd-api-xyz.a.run.app", "", "", "", token("viewer@example.com")); code != 200 {
		t.Errorf("viewer: %d %s, want 200", code, body)
	}
	if code, body := send(t, http.MethodPut, "http://"+addr+"/v1/sync/auto_execute", "", "application/json", "", `{"enabled":false}`, token("viewer@example.com")); code != 403 {
		t.Errorf("viewer steering: %d %s, want 403", code, body)
	}
	if code, body := send(t, http.MethodPut, "http://"+addr+"/v1/sync/auto_execute", "", "application/json", "", `{"enabled":false}`, token("ops@example.com")); code != 200 {
		t.Errorf("operator steering: %d %s, want 200", code, body)
	}
}
