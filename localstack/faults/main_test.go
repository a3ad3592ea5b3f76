//go:build linux

package faults_test

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/shared/controlplane"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator"
	"github.com/kube-git-deploy/kube-git-deploy/shared/emulator/emulatortest"
)

// scenariosAtOnce is how many scenarios run in parallel unless -parallel
// says otherwise. They mostly wait (for leases to lapse, locks to expire,
// gates to open), so more of them run at once than there are CPUs; each
// has its own stack, and they share no image repository.
const scenariosAtOnce = 10

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", strconv.Itoa(scenariosAtOnce))
	}
	emulatortest.Main(m, emulator.Firestore, emulator.PubSub)
}

// env is what the scenarios share: the binaries, the gate program and a
// Kubernetes control plane for those that do not break one.
type env struct {
	// binDir holds the functions, runner and api binaries.
	binDir string
	// gates hold builds in the middle (see gates).
	gates *gates

	parent  *testing.T
	logsDir string

	cpOnce sync.Once
	cp     *controlplane.ControlPlane
	cpErr  error

	engineOnce sync.Once
	engine     *dockerd
	engineErr  error
}

// newEnv builds the binaries (with -race when the tests run with it, as
// make test does) and starts the gates.
func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{parent: t, binDir: t.TempDir(), logsDir: t.TempDir(), gates: startGates(t)}
	const mod = "github.com/kube-git-deploy/kube-git-deploy/"
	args := []string{"build", "-o", e.binDir + "/"}
	if raceEnabled {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, mod+"functions/cmd/functions", mod+"runner", mod+"api")...).CombinedOutput(); err != nil {
		t.Fatalf("build the binaries: %v\n%s", err, out)
	}
	return e
}

// cluster returns the kubeconfig of the control plane the scenarios
// share, starting it the first time; it stops after the last scenario.
// Each scenario deploys to its own namespace (its repository's).
func (e *env) cluster(t *testing.T) *controlplane.ControlPlane {
	t.Helper()
	e.cpOnce.Do(func() {
		f, err := os.Create(filepath.Join(e.logsDir, "controlplane.log"))
		if err != nil {
			e.cpErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		e.cp, e.cpErr = controlplane.Start(ctx, controlplane.Options{Log: f})
		e.parent.Cleanup(func() {
			if e.cp != nil {
				e.cp.Stop()
			}
			f.Close()
		})
	})
	if e.cpErr != nil {
		t.Fatalf("shared control plane: %v", e.cpErr)
	}
	return e.cp
}

// dockerHost returns the DOCKER_HOST of the Docker Engine the scenarios
// share, a dockerd of the tests' own (see dockerd), starting it the first
// time; it stops after the last scenario. Each scenario builds images of
// its own repository (the registry's port is part of their names), so
// none removes (prunes) another's.
func (e *env) dockerHost(t *testing.T) string {
	t.Helper()
	e.engineOnce.Do(func() {
		if e.engine, e.engineErr = newDockerd(e.logsDir); e.engineErr != nil {
			return
		}
		e.parent.Cleanup(func() { e.engine.close() })
		e.engineErr = e.engine.start()
	})
	if e.engineErr != nil {
		t.Fatalf("shared Docker Engine: %v", e.engineErr)
	}
	return e.engine.host
}

// TestFaults runs each fault scenario against a stack of its own, in
// parallel; the control plane they share stops once all have ended.
func TestFaults(t *testing.T) {
	e := newEnv(t)
	for _, sc := range []struct {
		name string
		run  func(*testing.T, *env)
	}{
		{"RunnerKilledMidBuild", testRunnerKilledMidBuild},
		{"RunnerKilledMidDeploy", testRunnerKilledMidDeploy},
		{"RunnerTerminatedMidJob", testRunnerTerminatedMidJob},
		{"DockerEngineStopped", testDockerEngineStopped},
		{"RegistryDown", testRegistryDown},
		{"APIServerDown", testAPIServerDown},
		{"TwoRunnersOneRelease", testTwoRunnersOneRelease},
		{"AtomicRollback", testAtomicRollback},
		{"PubSubRestarted", testPubSubRestarted},
		{"FirestoreRestarted", testFirestoreRestarted},
	} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(t, e)
		})
	}
}
