// Package emulatortest runs Go tests against the real Firestore and Pub/Sub
// emulators: Main starts them for a package's TestMain (or reuses emulators
// already named by FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST, as
// `make test` arranges), and ProjectID isolates each test in its own
// project so tests can run in parallel.
package emulatortest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
)

// Main starts the emulators a package needs, runs its tests and stops them.
// Call it from TestMain. Missing emulators are a hard failure, never a skip:
// a machine without them must not report a green run.
func Main(m *testing.M, services ...emulator.Service) {
	os.Exit(run(m, services))
}

func run(m *testing.M, services []emulator.Service) int {
	// No Google library may ever look for credentials on the network.
	os.Setenv(emulator.MetadataHostEnv, emulator.MetadataHostLoopback)

	var missing []emulator.Service
	for _, s := range services {
		if os.Getenv(hostEnv(s)) == "" {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		e, err := emulator.Start(context.Background(), emulator.Options{Services: missing})
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: these tests need the Google Cloud emulators and could not start them:\n%v\n", err)
			return 1
		}
		defer e.Stop()
		if err := e.Setenv(); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
			return 1
		}
	}
	return m.Run()
}

func hostEnv(s emulator.Service) string {
	if s == emulator.Firestore {
		return emulator.FirestoreHostEnv
	}
	return emulator.PubSubHostEnv
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9]+`)

// ProjectID returns a project id unique to this test (and this run), so its
// Firestore documents and Pub/Sub resources are invisible to every other
// test. It is a valid Google Cloud project id: lowercase, 6–30 characters.
func ProjectID(t testing.TB) string {
	t.Helper()
	name := unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "-")
	name = strings.Trim(name, "-")
	if len(name) > 16 {
		name = strings.TrimRight(name[:16], "-")
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random project suffix: %v", err)
	}
	return "t-" + name + "-" + hex.EncodeToString(b[:])
}

// FirestoreHost returns the emulator address, failing the test if none is
// configured (Main was not used).
func FirestoreHost(t testing.TB) string {
	t.Helper()
	h := os.Getenv(emulator.FirestoreHostEnv)
	if h == "" {
		t.Fatalf("%s is not set: call emulatortest.Main from TestMain", emulator.FirestoreHostEnv)
	}
	return h
}

// PubSubHost returns the emulator address, failing the test if none is
// configured (Main was not used).
func PubSubHost(t testing.TB) string {
	t.Helper()
	h := os.Getenv(emulator.PubSubHostEnv)
	if h == "" {
		t.Fatalf("%s is not set: call emulatortest.Main from TestMain", emulator.PubSubHostEnv)
	}
	return h
}
