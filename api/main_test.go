package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	"github.com/kube-git-deploy/kube-git-deploy/shared/caller"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
	"github.com/kube-git-deploy/kube-git-deploy/shared/secret"
)

func TestMain(m *testing.M) { emulatortest.Main(m, emulator.Firestore, emulator.PubSub) }

func testEnv(project string, extra map[string]string) func(string) string {
	env := map[string]string{
		"GOOGLE_CLOUD_PROJECT":    project,
		"KGD_ENCRYPTION_KEY":      base64.StdEncoding.EncodeToString(make([]byte, secret.KeySize)),
		"PUBSUB_EMULATOR_HOST":    os.Getenv("PUBSUB_EMULATOR_HOST"),
		"FIRESTORE_EMULATOR_HOST": os.Getenv("FIRESTORE_EMULATOR_HOST"),
	}
	for k, v := range extra {
		env[k] = v
	}
	return func(k string) string { return env[k] }
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestLoadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string // substrings of the error; none means valid
	}{
		{name: "defaults", env: map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "KGD_ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(make([]byte, 32))}},
		{name: "nothing", want: []string{"GOOGLE_CLOUD_PROJECT: required", "KGD_ENCRYPTION_KEY"}},
		{name: "bad-ports", args: []string{"--rpc-port", "0", "--rpc-http-port", "70000"}, want: []string{"--rpc-port: 0 is not a port", "--rpc-http-port: 70000 is not a port"}},
		{name: "same-ports", args: []string{"--rpc-port", "9000", "--rpc-http-port", "9000"}, want: []string{"--rpc-http-port: 9000 is also the --rpc-port"}},
		{name: "bad-env", env: map[string]string{"PORT": "http", "KGD_STREAM_MAX_LAG": "-1", "KGD_STREAM_WRITE_TIMEOUT": "soon", "KGD_STREAM_MAX_HISTORY": "0"},
			want: []string{`PORT: "http" is not a port`, "KGD_STREAM_MAX_LAG", "KGD_STREAM_WRITE_TIMEOUT", "KGD_STREAM_MAX_HISTORY"}},
		{name: "bad-stream-env", env: map[string]string{"KGD_STREAM_MAX": "lots", "KGD_STREAM_REPLAY_ITERATIONS": "0", "KGD_STREAM_REPLAY_WINDOW": "-1h", "KGD_STREAM_TRACK_CHECK": "often"},
			want: []string{`KGD_STREAM_MAX: "lots"`, `KGD_STREAM_REPLAY_ITERATIONS: "0"`, `KGD_STREAM_REPLAY_WINDOW: "-1h"`, `KGD_STREAM_TRACK_CHECK: "often"`}},
		{name: "zero-stream-env", env: map[string]string{"KGD_STREAM_MAX": "0", "KGD_STREAM_REPLAY_ITERATIONS": "x", "KGD_STREAM_REPLAY_WINDOW": "1", "KGD_STREAM_TRACK_CHECK": "0s"},
			want: []string{`KGD_STREAM_MAX: "0"`, `KGD_STREAM_REPLAY_ITERATIONS: "x"`, `KGD_STREAM_REPLAY_WINDOW: "1"`, `KGD_STREAM_TRACK_CHECK: "0s"`}},
		{name: "unknown-flag", args: []string{"--rpc-prot", "1"}, want: []string{"flag provided but not defined: -rpc-prot"}},
		{name: "bad-access", env: map[string]string{"KGD_AUTH": "none", "KGD_OPERATORS": "ops@example.com, bob", "KGD_HANDLE_ENABLED": "yes please", "KGD_ALLOWED_HOSTS": "https://x/"},
			want: []string{`KGD_AUTH: "none"`, `KGD_OPERATORS: "bob" is not an email address`, "KGD_HANDLE_ENABLED", "KGD_ALLOWED_HOSTS"}},
		{name: "local-on-every-interface", env: map[string]string{"KGD_LISTEN_HOST": "0.0.0.0"}, want: []string{"KGD_LISTEN_HOST: 0.0.0.0 is not a loopback address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadConfig(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if c.rpcPort != 50051 || c.httpPort != 50052 || c.host != "127.0.0.1" || c.maxLag != 10000 || c.maxHistory != 500000 ||
					c.maxStreams != 2000 || c.replayIterations != 5 || c.replayWindow != time.Hour || c.trackCheck != time.Minute ||
					c.auth != caller.ModeLocal || c.handle || len(c.operators) != 0 {
					t.Errorf("defaults = %+v", c)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestLoadAccessConfig: the access settings, and IAM mode on Cloud Run.
// TestLoadStreamConfig: the stream settings are read as given.
func TestLoadStreamConfig(t *testing.T) {
	env := map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "KGD_ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"KGD_STREAM_MAX": "7", "KGD_STREAM_REPLAY_ITERATIONS": "2", "KGD_STREAM_REPLAY_WINDOW": "90m", "KGD_STREAM_TRACK_CHECK": "10s"}
	c, err := loadConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.maxStreams != 7 || c.replayIterations != 2 || c.replayWindow != 90*time.Minute || c.trackCheck != 10*time.Second {
		t.Errorf("stream settings = %d streams, %d iterations, window %v, track check %v; want 7, 2, 1h30m, 10s",
			c.maxStreams, c.replayIterations, c.replayWindow, c.trackCheck)
	}
}

func TestLoadAccessConfig(t *testing.T) {
	env := map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "KGD_ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"K_SERVICE": "kgd-api", "PORT": "8080", "KGD_LISTEN_HOST": "0.0.0.0",
		"KGD_OPERATORS": " Ops@Example.com ,, bob@example.com", "KGD_HANDLE_ENABLED": "true", "KGD_ALLOWED_HOSTS": "dev.example:50052"}
	c, err := loadConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.auth != caller.ModeIAM || !c.handle || strings.Join(c.operators, ",") != "ops@example.com,bob@example.com" || strings.Join(c.allowedHosts, ",") != "dev.example" {
		t.Errorf("config = %+v", c)
	}
}

func TestBusyPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	for _, args := range [][]string{
		{"--rpc-port", strconv.Itoa(busy), "--rpc-http-port", strconv.Itoa(freePort(t))},
		{"--rpc-port", strconv.Itoa(freePort(t)), "--rpc-http-port", strconv.Itoa(busy)},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := run(ctx, args, testEnv(emulatortest.ProjectID(t), nil), io.Discard)
		cancel()
		want := fmt.Sprintf("%s %d", args[0], busy)
		if args[3] == strconv.Itoa(busy) {
			want = fmt.Sprintf("--rpc-http-port %d", busy)
		}
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("run %v: %v, want an error naming %q", args, err, want)
		}
	}
}

// start runs the service in the background and waits until /healthz answers.
func start(t *testing.T, args []string, env func(string) string, httpAddr string) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	var mu sync.Mutex
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, env, lockedWriter{&mu, &logs}) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-done:
			cancel()
			mu.Lock()
			t.Fatalf("api exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("api did not answer /healthz")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = fmt.Errorf("api did not stop")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestServeAndShutdown: the two ports serve; SIGTERM (ctx) ends an open
// HTTP event stream with an UNAVAILABLE error frame and run returns.
func TestServeAndShutdown(t *testing.T) {
	grpcPort, httpPort := freePort(t), freePort(t)
	httpAddr := "127.0.0.1:" + strconv.Itoa(httpPort)
	stop := start(t, []string{"--rpc-port", strconv.Itoa(grpcPort), "--rpc-http-port", strconv.Itoa(httpPort)},
		testEnv(emulatortest.ProjectID(t), nil), httpAddr)

	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"ok":true`) {
		t.Errorf("/readyz = %d %s", resp.StatusCode, b)
	}
	cc, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(grpcPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := v1pb.NewSkaffoldServiceClient(cc).GetState(context.Background(), &emptypb.Empty{}); err != nil {
		t.Errorf("gRPC GetState: %v", err)
	}
	h, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health: %v %v", h, err)
	}

	resp, err = http.Get("http://" + httpAddr + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v1/events: %d", resp.StatusCode)
	}
	time.Sleep(200 * time.Millisecond) // the stream is subscribed
	if err := stop(); err != nil {
		t.Fatalf("run returned %v", err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	var f struct {
		Error struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	if jerr := json.Unmarshal([]byte(line), &f); jerr != nil || f.Error.Code != int(codes.Unavailable) {
		t.Errorf("stream at shutdown: %q (%v), want an UNAVAILABLE error frame", line, err)
	}
}

// TestCloudRunPort: with PORT set, gRPC (h2c) and HTTP share one port.
func TestCloudRunPort(t *testing.T) {
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	start(t, nil, testEnv(emulatortest.ProjectID(t), map[string]string{"PORT": strconv.Itoa(port)}), addr)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = v1pb.NewSkaffoldServiceClient(cc).AutoBuild(context.Background(), &v1pb.TriggerRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("gRPC over $PORT: %v, want InvalidArgument", err)
	}
	resp, err := http.Get("http://" + addr + "/v1/state")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"buildState"`) {
		t.Errorf("HTTP over $PORT: %d %s", resp.StatusCode, b)
	}
}
