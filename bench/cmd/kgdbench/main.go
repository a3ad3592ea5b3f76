// Command kgdbench is make bench: it runs the benchmarks that measure the
// figures of bench/RESULTS.md, one package at a time, each bounded in
// time, on loopback only, and writes RESULTS.md from the samples they
// recorded (package bench).
//
// It expects the emulators' addresses in its environment (make bench runs
// it under .bin/emulators) and a Docker Engine and the local control
// plane's binaries (make k8s-bin), as the tests do.
//
//	kgdbench [-out bench/RESULTS.md] [-only REGEXP] [-samples FILE]
//
// -samples renders RESULTS.md from an earlier run's samples file without
// running anything.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/kube-git-deploy/kube-git-deploy/bench"
)

// step is one go test run.
type step struct {
	name    string
	pkg     string
	bench   string
	timeout time.Duration
}

// steps are the benchmarks, in the order run; the stack's last (it is the
// heaviest and starts its own control plane).
var steps = []step{
	{"webhook", "./functions/webhook", "BenchmarkWebhook", 10 * time.Minute},
	{"events", "./api/internal/skaffold", "BenchmarkEventLatency", 10 * time.Minute},
	{"job", "./runner/internal/pipeline", "BenchmarkJob", 12 * time.Minute},
	{"build", "./runner/internal/build", "BenchmarkBuild", 10 * time.Minute},
	{"stack", "./localstack", "BenchmarkLocalStack", 20 * time.Minute},
}

func main() {
	out := flag.String("out", "bench/RESULTS.md", "the results file to write")
	only := flag.String("only", "", "run only the steps whose name matches this regular expression")
	samples := flag.String("samples", "", "render from this samples file (JSON lines) instead of running")
	note := flag.String("note", "", "a remark about the run for RESULTS.md (e.g. the machine was busy)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), *out, *only, *samples, *note, log); err != nil {
		log.Error("kgdbench", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out, only, samplesFile, note string, log *slog.Logger) error {
	m := machine(ctx)
	m.Note = note
	var failures []string
	if samplesFile == "" {
		dir, err := os.MkdirTemp("", "kgdbench-")
		if err != nil {
			return fmt.Errorf("raw output directory: %w", err)
		}
		samplesFile = filepath.Join(dir, "samples.jsonl")
		re, err := regexp.Compile(only)
		if err != nil {
			return fmt.Errorf("-only: %w", err)
		}
		for _, s := range steps {
			if !re.MatchString(s.name) {
				continue
			}
			raw := filepath.Join(dir, s.name+".txt")
			log.Info("running", "step", s.name, "package", s.pkg, "output", raw)
			began := time.Now()
			if err := s.run(ctx, samplesFile, raw); err != nil {
				log.Error("step failed", "step", s.name, "err", err)
				failures = append(failures, fmt.Sprintf("%s (%s): %v\n\n```\n%s\n```", s.name, s.pkg, err, tail(raw, 25)))
			}
			log.Info("done", "step", s.name, "took", time.Since(began).Round(time.Second))
		}
		log.Info("raw output and samples kept", "dir", dir)
	}
	series, err := bench.ReadSeries(samplesFile)
	if err != nil {
		return err
	}
	m.LoadEnd = loadavg()
	md := bench.Markdown(m, series, failures)
	if err := os.WriteFile(out, md, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	log.Info("wrote", "file", out, "series", len(series))
	if len(failures) > 0 {
		return fmt.Errorf("%d step(s) failed; see %s", len(failures), out)
	}
	return nil
}

// run runs the step's benchmark once (-benchtime=1x: one op is a whole
// series), appending its samples to samplesFile.
func (s step) run(ctx context.Context, samplesFile, raw string) error {
	f, err := os.Create(raw)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(ctx, s.timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-run", "^$", "-bench", "^"+s.bench+"$",
		"-benchtime", "1x", "-timeout", s.timeout.String(), s.pkg)
	cmd.Env = append(os.Environ(), bench.OutEnv+"="+samplesFile, "GCE_METADATA_HOST=127.0.0.1:1")
	cmd.Stdout, cmd.Stderr = io.MultiWriter(f, os.Stderr), io.MultiWriter(f, os.Stderr)
	return cmd.Run()
}

// machine describes where the benchmarks run.
func machine(ctx context.Context) bench.Machine {
	m := bench.Machine{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), CPUs: runtime.NumCPU(), LoadStart: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if mm := regexp.MustCompile(`(?m)^model name\s*:\s*(.*)$`).FindSubmatch(b); mm != nil {
			m.CPU = string(mm[1])
		}
	}
	m.Go = command(ctx, "go", "version")
	m.Docker = command(ctx, "docker", "version", "--format", "client {{.Client.Version}}, server {{.Server.Version}}")
	m.Kernel = command(ctx, "uname", "-sr")
	return m
}

func command(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "unavailable (" + err.Error() + ")"
	}
	return strings.TrimSpace(string(out))
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	return string(bytes.Join(lines[max(0, len(lines)-n):], []byte("\n")))
}
