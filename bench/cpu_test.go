package bench

import (
	"strings"
	"testing"
)

// spin does a fixed amount of CPU work.
func spin() uint64 {
	var x uint64 = 1
	for i := range uint64(300_000_000) {
		x = x*6364136223846793005 + i
	}
	return x
}

func TestCPUMeter(t *testing.T) {
	var m CPUMeter
	m.Start()
	sink := spin()
	m.Stop()
	s := m.Series("9", "machine CPU busy", "spinning")
	if len(s.Samples) != 1 {
		t.Fatalf("samples = %v, want one (sink %d)", s.Samples, sink)
	}
	if b := s.Samples[0]; b <= 0 || b > 100 {
		t.Errorf("busy = %v%%, want in (0, 100]", b)
	}
	// This test binary did the work: it is among the programs named.
	if !strings.Contains(s.Note, "bench.test") {
		t.Errorf("note %q does not name this test binary", s.Note)
	}
}

func TestCPUUseTop(t *testing.T) {
	u := CPUUse{ByProgram: map[string]float64{"java": 0.41, "dockerd": 0.22, "runner": 0.12, "sh": 0.001}}
	if got, want := u.Top(3), "java 41%, dockerd 22%, runner 12%"; got != want {
		t.Errorf("Top(3) = %q, want %q", got, want)
	}
	if got := (CPUUse{}).Top(3); got != "" {
		t.Errorf("Top of nothing = %q", got)
	}
}

func TestReadProcStat(t *testing.T) {
	s, err := TakeCPU()
	if err != nil {
		t.Fatal(err)
	}
	if s.total == 0 || len(s.procs) == 0 {
		t.Fatalf("snapshot: total %d jiffies, %d processes", s.total, len(s.procs))
	}
}
