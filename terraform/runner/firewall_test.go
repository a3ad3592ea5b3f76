//go:build linux

// Package runner_test runs build-firewall.sh, the very script the runner
// VMs' cloud-init installs, against this machine's real Docker Engine and
// iptables, with a stand-in metadata server at 169.254.169.254 in a
// network namespace of its own (routed like a GCE VM routes it: through
// the host, so containers on the default bridge reach it through FORWARD
// and DOCKER-USER, and host-network processes through OUTPUT).
//
// It needs root, iptables, iproute2 and a Docker Engine (CI has them; it
// fails, never skips, without them). Traffic to 169.254.169.254 goes to
// the namespace for the test's duration, so nothing leaves the machine.
package runner_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const metadataIP = "169.254.169.254"

// hostLock holds, until the test ends, a lock that every run of this test
// on the machine takes: it changes the host's iptables and routes, which
// two test runs at once (a CI run beside a developer's make test) would
// fight over ("RTNETLINK answers: File exists").
func hostLock(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "kgd-build-firewall-test.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock, after the other cleanups
	clearStale(t)
}

// clearStale removes what a run of this test that was killed left on the
// host (its cleanups never ran): the route to the metadata address, its
// namespaces and veth links, and the firewall's rules. Holding hostLock,
// any such state is a dead run's.
func clearStale(t *testing.T) {
	t.Helper()
	for range 10 {
		if exec.Command("ip", "route", "del", metadataIP+"/32").Run() != nil {
			break
		}
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, "kgd-md-") {
				_ = exec.Command("ip", "netns", "del", name).Run()
			}
		}
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, "kgdmd") {
				_ = exec.Command("ip", "link", "del", name).Run()
			}
		}
	}
	if script, err := filepath.Abs("build-firewall.sh"); err == nil {
		_ = exec.Command("sh", script, "remove", "docker0").Run()
	}
}

func TestBuildFirewall(t *testing.T) {
	for _, tool := range []string{"iptables", "ip", "docker"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: this test needs root, iptables, iproute2 and a Docker Engine (.ci/run installs them)", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test changes iptables and network namespaces: run it as root (CI does)")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("no Docker Engine answers: %v\n%s", err, out)
	}
	hostLock(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	fakeMetadata(t)
	image := proberImage(t, ctx)
	script, err := filepath.Abs("build-firewall.sh")
	if err != nil {
		t.Fatal(err)
	}
	firewall := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, "sh", append([]string{script}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("build-firewall.sh %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("sh", script, "remove", "docker0").Run() })

	// Without the firewall a build container reaches the metadata API: the
	// test can tell a block from a set-up that never worked.
	if got := probe(t, ctx, image); got["http"] != "ok" || got["dns_udp"] != "ok" || got["dns_tcp"] != "ok" {
		t.Fatalf("without the firewall: %v, want everything reachable (the stand-in metadata server is not routed)", got)
	}

	firewall("docker0", "18080")
	firewall("docker0", "18080") // idempotent: the VM runs it on every boot
	rules := iptables(t, "-S", "DOCKER-USER")
	if n := strings.Count(rules, "-j KGD-BUILD"); n != 1 || !strings.HasPrefix(strings.SplitN(rules, "\n", 3)[1], "-A DOCKER-USER -i docker0 -j KGD-BUILD") {
		t.Errorf("DOCKER-USER after two runs:\n%s\nwant exactly one jump to KGD-BUILD, first", rules)
	}

	t.Run("container", func(t *testing.T) {
		got := probe(t, ctx, image)
		if got["http"] == "ok" {
			t.Errorf("a container on the default bridge reached the metadata server's HTTP API: %v", got)
		}
		if got["dns_udp"] != "ok" || got["dns_tcp"] != "ok" {
			t.Errorf("DNS through the metadata server is blocked: %v (builds could not resolve names)", got)
		}
	})
	t.Run("dockerfile-run-step", func(t *testing.T) {
		// What a hostile Dockerfile does: RUN curl 169.254.169.254/...
		if out, err := dockerBuild(ctx, image, "blocked"); err != nil {
			t.Errorf("a RUN step expecting the metadata API blocked failed: %v\n%s", err, out)
		}
		if out, err := dockerBuild(ctx, image, "open"); err == nil {
			t.Errorf("a RUN step reached the metadata API:\n%s", out)
		}
	})
	t.Run("host-network", func(t *testing.T) {
		// The runner runs with --network host and keeps its credentials.
		if out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--network", "host", image, "-expect", "open").CombinedOutput(); err != nil {
			t.Errorf("a host-network container lost the metadata API: %v\n%s", err, out)
		}
	})

	firewall("remove", "docker0")
	if rules := iptables(t, "-S"); strings.Contains(rules, "KGD-") {
		t.Errorf("rules left after remove:\n%s", rules)
	}
	if got := probe(t, ctx, image); got["http"] != "ok" {
		t.Errorf("after remove: %v, want the metadata API reachable again", got)
	}
}

// fakeMetadata puts a stand-in metadata server (HTTP on 80, a UDP and a
// TCP listener on 53) at 169.254.169.254 in a network namespace of its
// own, and routes that address there through a veth pair.
func fakeMetadata(t *testing.T) {
	t.Helper()
	id := strconv.Itoa(os.Getpid() % 100000)
	ns, host, peer := "kgd-md-"+id, "kgdmd"+id+"h", "kgdmd"+id+"n"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	link := freeLinkNet(t)
	hostIP, peerIP := link.Addr().Next(), link.Addr().Next().Next()
	run("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run("link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", host).Run() })
	run("link", "set", peer, "netns", ns)
	run("addr", "add", hostIP.String()+"/30", "dev", host)
	run("link", "set", host, "up")
	run("-n", ns, "addr", "add", peerIP.String()+"/30", "dev", peer)
	run("-n", ns, "addr", "add", metadataIP+"/32", "dev", peer)
	run("-n", ns, "link", "set", peer, "up")
	run("-n", ns, "link", "set", "lo", "up")
	run("-n", ns, "route", "add", "default", "via", hostIP.String())
	run("route", "add", metadataIP+"/32", "via", peerIP.String())
	t.Cleanup(func() { _ = exec.Command("ip", "route", "del", metadataIP+"/32", "via", peerIP.String()).Run() })

	var (
		httpL, tcpL net.Listener
		udp         net.PacketConn
	)
	inNamespace(t, "/run/netns/"+ns, func() error {
		var err error
		if httpL, err = net.Listen("tcp", metadataIP+":80"); err != nil {
			return err
		}
		if tcpL, err = net.Listen("tcp", metadataIP+":53"); err != nil {
			return err
		}
		udp, err = net.ListenPacket("udp", metadataIP+":53")
		return err
	})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, `{"access_token":"ya29.stand-in"}`)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(httpL)
	go func() {
		for {
			c, err := tcpL.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 512)
		for {
			n, addr, err := udp.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = udp.WriteTo(buf[:n], addr)
		}
	}()
	t.Cleanup(func() { srv.Close(); tcpL.Close(); udp.Close() })
}

// freeLinkNet returns a /30 from the documentation and shared ranges that
// no route of this machine covers (some machines use TEST-NET-1 itself).
func freeLinkNet(t *testing.T) netip.Prefix {
	t.Helper()
	out, err := exec.Command("ip", "-j", "route", "show", "table", "all").Output()
	if err != nil {
		t.Fatalf("ip route: %v", err)
	}
	var routes []struct{ Dst string }
	if err := json.Unmarshal(out, &routes); err != nil {
		t.Fatalf("ip -j route: %v", err)
	}
	var used []netip.Prefix
	for _, r := range routes {
		if p, err := netip.ParsePrefix(r.Dst); err == nil {
			used = append(used, p)
		} else if a, err := netip.ParseAddr(r.Dst); err == nil {
			used = append(used, netip.PrefixFrom(a, a.BitLen()))
		}
	}
next:
	for _, c := range []string{"198.51.100.252/30", "203.0.113.252/30", "192.0.2.252/30", "100.127.255.252/30"} {
		p := netip.MustParsePrefix(c)
		for _, u := range used {
			if u.Overlaps(p) {
				continue next
			}
		}
		return p
	}
	t.Fatalf("no free /30 for the stand-in metadata link; routes: %s", out)
	return netip.Prefix{}
}

// inNamespace runs fn on an OS thread inside the network namespace at
// path; sockets fn opens stay in it. The thread is discarded afterwards.
func inNamespace(t *testing.T, path string, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open(path)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in namespace %s: %v", path, err)
	}
}

// proberImage builds testdata/prober into a FROM scratch image.
func proberImage(t *testing.T, ctx context.Context) string {
	t.Helper()
	dir := t.TempDir()
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "prober"), "./testdata/prober")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build prober: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY prober /prober\nENTRYPOINT [\"/prober\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	image := "kgd-firewall-prober:" + strconv.Itoa(os.Getpid())
	if out, err := exec.CommandContext(ctx, "docker", "build", "-q", "-t", image, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker build prober: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", image).Run() })
	return image
}

// probe runs the prober in a container on the default bridge, where docker
// builds run their steps.
func probe(t *testing.T, ctx context.Context, image string) map[string]string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "docker", "run", "--rm", image).Output()
	if err != nil {
		t.Fatalf("docker run prober: %v", err)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &got); err == nil {
			return got
		}
	}
	t.Fatalf("prober printed no result: %s", out)
	return nil
}

// dockerBuild builds a Dockerfile whose RUN step probes the metadata
// server, expecting it blocked or open.
func dockerBuild(ctx context.Context, image, expect string) (string, error) {
	dir, err := os.MkdirTemp("", "kgd-firewall-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	df := fmt.Sprintf("FROM %s\nRUN [\"/prober\", \"-expect\", %q]\n", image, expect)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "docker", "build", "--no-cache", "--rm", "--force-rm", "-q", dir)
	out, err := cmd.CombinedOutput()
	if err == nil {
		id := strings.TrimSpace(string(out))
		_ = exec.Command("docker", "rmi", "-f", id).Run()
	}
	return string(out), err
}

func iptables(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).Output()
	if err != nil {
		t.Fatalf("iptables %v: %v", args, err)
	}
	return string(out)
}
