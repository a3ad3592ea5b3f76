package emulator

import (
	"context"
	"errors"
	"net/http"
	"os"
	"testing"
	"time"
)

func TestStartStop(t *testing.T) {
	ctx := context.Background()
	e, err := Start(ctx, Options{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			e.Stop()
		}
	}()
	for _, host := range []string{e.FirestoreHost, e.PubSubHost} {
		resp, err := http.Get("http://" + host + "/")
		if err != nil {
			t.Fatalf("GET %s: %v", host, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %s, want 200", host, resp.Status)
		}
	}
	if err := ClearFirestore(ctx, e.FirestoreHost, "t-clear"); err != nil {
		t.Errorf("ClearFirestore: %v", err)
	}
	pids := []int{}
	for _, p := range e.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	e.Stop()
	stopped = true
	for _, host := range []string{e.FirestoreHost, e.PubSubHost} {
		c := http.Client{Timeout: time.Second}
		if resp, err := c.Get("http://" + host + "/"); err == nil {
			resp.Body.Close()
			t.Errorf("emulator on %s still answers after Stop", host)
		}
	}
	for _, pid := range pids {
		if _, err := os.Stat("/proc/" + itoa(pid)); err == nil {
			t.Errorf("process %d still exists after Stop", pid)
		}
	}
}

func TestStartErrors(t *testing.T) {
	t.Run("missing-sdk", func(t *testing.T) {
		_, err := Start(context.Background(), Options{SDKRoot: t.TempDir()})
		if !errors.Is(err, ErrSDKMissing) {
			t.Fatalf("Start with empty SDK root: err = %v, want ErrSDKMissing", err)
		}
	})
	t.Run("missing-java", func(t *testing.T) {
		_, err := Start(context.Background(), Options{Java: "/nonexistent/java"})
		if !errors.Is(err, ErrSDKMissing) {
			t.Fatalf("Start with no java: err = %v, want ErrSDKMissing", err)
		}
	})
	t.Run("port-taken", func(t *testing.T) {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		l, err := listen(port)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		_, err = Start(context.Background(), Options{Services: []Service{PubSub}, PubSubPort: port})
		if err == nil {
			t.Fatal("Start on a taken port succeeded")
		}
	})
}
