package localstack

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

func TestRenderJSONLog(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`{"time":"2026-11-22T05:40:32Z","severity":"INFO","logging.googleapis.com/sourceLocation":{"function":"main.run"},"message":"runner started","subscription":"kgd-runner","concurrency":1}`: "INFO runner started subscription=kgd-runner concurrency=1",
		`{"severity":"WARNING","message":"odd","err":"a b","list":["x", "y"],"empty":""}`:                                                                                                          `WARNING odd err="a b" list=["x","y"] empty=""`,
		`{"time":"2026-11-22T05:40:32Z","level":"INFO","msg":"delivered","status":202}`:                                                                                                            "INFO delivered status=202",
		`plain text`:   "plain text",
		`{"a":1}`:      `{"a":1}`,
		`{not json`:    `{not json`,
		`{"x":1} tail`: `{"x":1} tail`,
	} {
		if got := renderJSONLog(in); got != want {
			t.Errorf("renderJSONLog(%s)\n got %s\nwant %s", in, got, want)
		}
	}
}

func TestLineWriter(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	con := &console{w: &out}
	a := con.source("a", "[a-emulator] ")
	b := con.source("b", "")
	b.drop = emulatorNoise
	var wg sync.WaitGroup
	wg.Go(func() {
		a.Write([]byte("[a-emulator] one\n[a-emulator] tw"))
		a.Write([]byte("o\n{\"severity\":\"INFO\",\"message\":\"m\"}\nunterminated"))
		a.Flush()
	})
	wg.Go(func() {
		b.Write([]byte("Nov 22, 2026 5:40:27 AM com.google.cloud.pubsub.testing.v1.Main main\nINFO: Server started, listening on 5011\n"))
		b.Write([]byte("INFO: Detected HTTP/2 connection.\n\tat io.grpc.internal.ServerImpl.closed(ServerImpl.java:877)\n"))
		b.Write([]byte("java.lang.NoSuchMethodError: 'x'\n... 30 more\n\n"))
	})
	wg.Wait()
	var gotA, gotB []string
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "[a] "):
			gotA = append(gotA, l)
		case strings.HasPrefix(l, "[b] "):
			gotB = append(gotB, l)
		default:
			t.Errorf("interleaved or unprefixed line %q", l)
		}
	}
	if want := "[a] one|[a] two|[a] INFO m|[a] unterminated"; strings.Join(gotA, "|") != want {
		t.Errorf("a's lines = %q, want %q", strings.Join(gotA, "|"), want)
	}
	if want := "[b] INFO: Server started, listening on 5011"; strings.Join(gotB, "|") != want {
		t.Errorf("b's lines = %q, want %q (noise left out)", strings.Join(gotB, "|"), want)
	}
	if a.tail.String() != "one\ntwo\nINFO m\nunterminated" {
		t.Errorf("a's tail = %q", a.tail.String())
	}
}

func TestRegistryNoise(t *testing.T) {
	t.Parallel()
	for line, noise := range map[string]bool{
		"GET /v2/": true, "HEAD /v2/demo/hello/blobs/sha256:22 404 BLOB_UNKNOWN Unknown blob": true,
		"POST /v2/demo/hello/blobs/uploads/": true, "PUT /v2/demo/hello/blobs/uploads/1?digest=sha256%3Af1": true,
		"PUT /v2/demo/hello/manifests/f51758a": false, "listen tcp: address in use": false,
	} {
		if registryNoise(line) != noise {
			t.Errorf("registryNoise(%q) = %v, want %v", line, !noise, noise)
		}
	}
}
