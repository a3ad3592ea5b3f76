//go:build unix

// Command imagecheck starts the API and runner images the way they run in
// the cloud and checks that each becomes healthy, for make images (and
// CI). It needs a Docker Engine and the emulators (FIRESTORE_EMULATOR_HOST
// and PUBSUB_EMULATOR_HOST, as .bin/emulators sets them); it contacts
// nothing but loopback.
//
// For each image it checks the image's user (not root) and entrypoint,
// then runs it on the host network as that user:
//
//   - api: Skaffold's two local ports (/healthz, /readyz, the gRPC health
//     service), then Cloud Run's mode (PORT: gRPC over h2c and HTTP on one
//     port);
//   - runner: with the host's Docker socket and the socket's group (as the
//     VM's cloud-init runs it), its /healthz must report that it receives
//     jobs and reaches the Docker Engine;
//
// and finally stops each with SIGTERM (docker stop), which must end it
// cleanly within the grace period the VM gives it.
//
//	imagecheck -repo kgd -tag dev
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kube-git-deploy/kube-git-deploy/shared/queue"
)

// nonroot is the user both images run as.
const nonroot = "65532:65532"

// stopGrace is what the VM's systemd unit gives the runner (docker stop
// --time 60); the check asks for a clean exit well within it.
const stopGrace = 60 * time.Second

func main() {
	repo := flag.String("repo", "kgd", "image repository prefix: <repo>/api, <repo>/runner")
	tag := flag.String("tag", "dev", "image tag")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := run(ctx, *repo, *tag); err != nil {
		fmt.Fprintf(os.Stderr, "imagecheck: %v\n", err)
		os.Exit(1)
	}
}

type checker struct {
	docker  *client.Client
	project string
	env     []string // what both images get
	tmp     string
}

func run(ctx context.Context, repo, tag string) error {
	fsHost, psHost := os.Getenv("FIRESTORE_EMULATOR_HOST"), os.Getenv("PUBSUB_EMULATOR_HOST")
	if fsHost == "" || psHost == "" {
		return errors.New("FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST must be set (run under .bin/emulators)")
	}
	dc, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer dc.Close()
	if _, err := dc.Ping(ctx); err != nil {
		return fmt.Errorf("no Docker Engine answers: %w", err)
	}
	project := "kgd-imagecheck"
	ps, err := pubsub.NewClient(ctx, project)
	if err != nil {
		return err
	}
	defer ps.Close()
	if err := queue.Ensure(ctx, ps, queue.DefaultNames(project), queue.EnsureOptions{}); err != nil {
		return fmt.Errorf("create the job queue on the emulator: %w", err)
	}
	tmp, err := os.MkdirTemp("", "kgd-imagecheck-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	key := make([]byte, 32)
	rand.Read(key)
	c := &checker{docker: dc, project: project, tmp: tmp, env: []string{
		"GOOGLE_CLOUD_PROJECT=" + project, "KGD_ENCRYPTION_KEY=" + base64.StdEncoding.EncodeToString(key),
		"FIRESTORE_EMULATOR_HOST=" + fsHost, "PUBSUB_EMULATOR_HOST=" + psHost,
		"GCE_METADATA_HOST=127.0.0.1:1", "KGD_LISTEN_HOST=127.0.0.1",
	}}
	return errors.Join(c.api(ctx, repo+"/api:"+tag), c.runner(ctx, repo+"/runner:"+tag))
}

// api checks the API service image in both of its serving modes.
func (c *checker) api(ctx context.Context, image string) error {
	if err := c.inspect(ctx, image, "/api"); err != nil {
		return err
	}
	rpc, httpPort, single := freePort(), freePort(), freePort()
	err := c.serve(ctx, image, "api-local", c.env, nil, []string{"--rpc-port", strconv.Itoa(rpc), "--rpc-http-port", strconv.Itoa(httpPort)},
		func(ctx context.Context) error {
			for _, path := range []string{"/healthz", "/readyz"} {
				if _, err := getJSON(ctx, httpPort, path); err != nil {
					return err
				}
			}
			return grpcHealthy(ctx, rpc)
		})
	if err != nil {
		return fmt.Errorf("%s (local ports): %w", image, err)
	}
	err = c.serve(ctx, image, "api-cloudrun", append(c.env, "PORT="+strconv.Itoa(single)), nil, nil,
		func(ctx context.Context) error {
			if _, err := getJSON(ctx, single, "/readyz"); err != nil {
				return err
			}
			return grpcHealthy(ctx, single) // h2c on the same port
		})
	if err != nil {
		return fmt.Errorf("%s (Cloud Run mode, PORT): %w", image, err)
	}
	fmt.Printf("imagecheck: %s healthy on its two local ports and on PORT (gRPC h2c + HTTP)\n", image)
	return nil
}

// runner checks the runner image as the VM's cloud-init runs it.
func (c *checker) runner(ctx context.Context, image string) error {
	if err := c.inspect(ctx, image, "/runner"); err != nil {
		return err
	}
	socket := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		socket = strings.TrimPrefix(h, "unix://")
	} else if h != "" {
		return fmt.Errorf("%s: DOCKER_HOST %q is not a unix socket the container can mount", image, h)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(socket, &st); err != nil {
		return fmt.Errorf("%s: docker socket: %w", image, err)
	}
	// The runner needs a cluster configuration to start; it is not
	// contacted until a job deploys.
	kc := filepath.Join(c.tmp, "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {token: unused}}]
current-context: c
`), 0o644); err != nil {
		return err
	}
	port := freePort()
	host := &container.HostConfig{
		Binds:    []string{socket + ":/var/run/docker.sock", kc + ":/etc/kgd/kubeconfig:ro"},
		GroupAdd: []string{strconv.FormatUint(uint64(st.Gid), 10)},
	}
	env := append(c.env, "KGD_HEALTH_PORT="+strconv.Itoa(port), "KUBECONFIG=/etc/kgd/kubeconfig", "DOCKER_HOST=unix:///var/run/docker.sock")
	err := c.serve(ctx, image, "runner", env, host, nil, func(ctx context.Context) error {
		body, err := getJSON(ctx, port, "/healthz")
		if err == nil && body["ok"] != true {
			err = fmt.Errorf("/healthz = %v", body)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", image, err)
	}
	fmt.Printf("imagecheck: %s healthy as %s with the Docker socket's group %d\n", image, nonroot, st.Gid)
	return nil
}

// inspect checks the image's user and entrypoint.
func (c *checker) inspect(ctx context.Context, image, entrypoint string) error {
	img, err := c.docker.ImageInspect(ctx, image)
	if err != nil {
		return fmt.Errorf("%s: %w (build it with make images)", image, err)
	}
	if img.Config == nil || img.Config.User != nonroot {
		return fmt.Errorf("%s runs as %q, want %s", image, img.Config.User, nonroot)
	}
	if len(img.Config.Entrypoint) != 1 || img.Config.Entrypoint[0] != entrypoint {
		return fmt.Errorf("%s entrypoint = %v, want [%s]", image, img.Config.Entrypoint, entrypoint)
	}
	return c.files(ctx, image)
}

// files checks the image's file system: CA certificates for TLS, and a
// /tmp the nonroot user can write job workspaces to.
func (c *checker) files(ctx context.Context, image string) error {
	created, err := c.docker.ContainerCreate(ctx, &container.Config{Image: image}, nil, nil, nil, "")
	if err != nil {
		return fmt.Errorf("%s: %w", image, err)
	}
	defer c.docker.ContainerRemove(context.WithoutCancel(ctx), created.ID, container.RemoveOptions{Force: true})
	rc, err := c.docker.ContainerExport(ctx, created.ID)
	if err != nil {
		return fmt.Errorf("%s: export: %w", image, err)
	}
	defer rc.Close()
	want := map[string]func(*tar.Header) bool{
		"tmp/":                              func(h *tar.Header) bool { return h.Typeflag == tar.TypeDir && h.Mode&0o7777 == 0o1777 },
		"etc/ssl/certs/ca-certificates.crt": func(h *tar.Header) bool { return h.Typeflag == tar.TypeReg && h.Size > 0 },
		"etc/passwd":                        func(h *tar.Header) bool { return h.Typeflag == tar.TypeReg },
	}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: read export: %w", image, err)
		}
		if ok, listed := want[strings.TrimPrefix(h.Name, "/")]; listed {
			if !ok(h) {
				return fmt.Errorf("%s: /%s has mode %o, type %c", image, strings.TrimPrefix(h.Name, "/"), h.Mode, h.Typeflag)
			}
			delete(want, strings.TrimPrefix(h.Name, "/"))
		}
	}
	for name := range want {
		return fmt.Errorf("%s: /%s missing", image, name)
	}
	return nil
}

// serve runs image on the host network until healthy answers nil (or a
// minute passes), then stops it with SIGTERM and requires a clean exit.
func (c *checker) serve(ctx context.Context, image, name string, env []string, host *container.HostConfig, args []string,
	healthy func(context.Context) error) (err error) {
	if host == nil {
		host = &container.HostConfig{}
	}
	host.NetworkMode = "host"
	name = "kgd-imagecheck-" + name + "-" + strconv.Itoa(os.Getpid())
	created, err := c.docker.ContainerCreate(ctx, &container.Config{Image: image, Env: env, Cmd: args}, host, nil, nil, name)
	if err != nil {
		return fmt.Errorf("create container: %w", err)
	}
	id := created.ID
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n--- container log ---\n%s", err, c.logs(id))
		}
		_ = c.docker.ContainerRemove(context.WithoutCancel(ctx), id, container.RemoveOptions{Force: true})
	}()
	if err := c.docker.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return fmt.Errorf("start container: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		err := healthy(wctx)
		if err == nil {
			break
		}
		if info, ierr := c.docker.ContainerInspect(ctx, id); ierr == nil && info.State != nil && !info.State.Running {
			return fmt.Errorf("exited with code %d before it was healthy: %v", info.State.ExitCode, err)
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("not healthy within a minute: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	started := time.Now()
	grace := int(stopGrace / time.Second)
	if err := c.docker.ContainerStop(ctx, id, container.StopOptions{Signal: "SIGTERM", Timeout: &grace}); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	info, err := c.docker.ContainerInspect(ctx, id)
	if err != nil {
		return err
	}
	if code := info.State.ExitCode; code != 0 {
		return fmt.Errorf("SIGTERM: exit code %d, want 0 (a clean stop)", code)
	}
	fmt.Printf("imagecheck: %s stopped cleanly %.1fs after SIGTERM\n", name, time.Since(started).Seconds())
	return nil
}

func (c *checker) logs(id string) string {
	rc, err := c.docker.ContainerLogs(context.Background(), id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: "40"})
	if err != nil {
		return err.Error()
	}
	defer rc.Close()
	var out bytes.Buffer
	_, _ = stdcopy.StdCopy(&out, &out, rc)
	return out.String()
}

func getJSON(ctx context.Context, port int, path string) (map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s = %d %s", path, resp.StatusCode, b)
	}
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	return body, nil
}

func grpcHealthy(ctx context.Context, port int) error {
	conn, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("gRPC health: %w", err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("gRPC health: %v", resp.Status)
	}
	return nil
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
