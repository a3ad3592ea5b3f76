package sink

import (
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRing(t *testing.T) {
	t.Parallel()
	r := newRing[int](3)
	var overflows []int
	for i := range 5 {
		if r.push(i) {
			overflows = append(overflows, i)
		}
	}
	if diff := cmp.Diff([]int{3, 4}, overflows); diff != "" {
		t.Errorf("pushes that overflowed (-want +got):\n%s", diff)
	}
	var got []int
	for {
		v, ok := r.pop()
		if !ok {
			break
		}
		got = append(got, v)
	}
	if diff := cmp.Diff([]int{2, 3, 4}, got); diff != "" {
		t.Errorf("popped (-want +got):\n%s", diff)
	}
	if r.push(9) || r.len() != 1 {
		t.Errorf("after draining: push overflowed or len %d, want 1", r.len())
	}
}

func TestBackoffFor(t *testing.T) {
	t.Parallel()
	d, _ := newDelivery[int](slog.New(slog.DiscardHandler), 1, DefaultMinBackoff, DefaultMaxBackoff)
	defer d.cancel()
	for _, tc := range []struct {
		failures int
		min, max time.Duration
	}{
		{1, 500 * time.Millisecond, time.Second},
		{2, time.Second, 2 * time.Second},
		{3, 2 * time.Second, 4 * time.Second},
		{6, 16 * time.Second, 32 * time.Second},
		{7, 30 * time.Second, time.Minute},
		{1000, 30 * time.Second, time.Minute},
	} {
		for range 100 {
			if got := d.backoffFor(tc.failures); got < tc.min || got > tc.max {
				t.Fatalf("backoffFor(%d) = %s, want within [%s, %s]", tc.failures, got, tc.min, tc.max)
			}
		}
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"1", time.Second},
		{"120", 2 * time.Minute},
		{"-1", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	} {
		h := http.Header{}
		if tc.header != "" {
			h.Set("Retry-After", tc.header)
		}
		if got := retryAfter(h, now); got != tc.want {
			t.Errorf("retryAfter(%q) = %s, want %s", tc.header, got, tc.want)
		}
	}
}
