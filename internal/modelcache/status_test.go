package modelcache

import (
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	bytes := []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1 KiB"}, {1536, "1.5 KiB"},
		{1288490189, "1.2 GiB"}, {3650722202, "3.4 GiB"}, {1 << 30, "1 GiB"}, {5 << 40, "5 TiB"},
	}
	for _, tt := range bytes {
		if got := formatBytes(tt.n); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	rates := []struct {
		bps  float64
		want string
	}{
		{0, "0 B/s"}, {999, "999 B/s"}, {1500, "1.5 kB/s"}, {210e6, "210 MB/s"}, {2.5e9, "2.5 GB/s"},
	}
	for _, tt := range rates {
		if got := formatRate(tt.bps); got != tt.want {
			t.Errorf("formatRate(%v) = %q, want %q", tt.bps, got, tt.want)
		}
	}
	st := DatasetStatus{Done: 1288490189, Total: 3650722202, Rate: 210e6, ETA: 10 * time.Second}
	if got, want := progressMessage(st), "fetching 1.2 GiB of 3.4 GiB, 210 MB/s, ETA 10s"; got != want {
		t.Errorf("progressMessage = %q, want %q", got, want)
	}
}

func TestRateMeter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var r rateMeter
	if got := r.rate(t0); got != 0 {
		t.Errorf("no samples: %v", got)
	}
	r.add(at(0), 0)
	for ms := 10; ms <= 10000; ms += 10 { // 100 bytes every 10 ms: 10 kB/s
		r.add(at(ms), int64(ms)*10)
	}
	if got := r.rate(at(10000)); got < 9900 || got > 10100 {
		t.Errorf("steady 10 kB/s measured as %v", got)
	}
	if n := len(r.samples); n > 60 {
		t.Errorf("%d samples kept over a 5 s window", n)
	}
	// Faster for the last 5 s: the window sees only that.
	for ms := 10010; ms <= 15000; ms += 10 {
		r.add(at(ms), 100000+int64(ms-10000)*100)
	}
	if got := r.rate(at(15000)); got < 99000 || got > 101000 {
		t.Errorf("100 kB/s over the window measured as %v", got)
	}
	// Nothing for longer than the window: 0.
	if got := r.rate(at(21000)); got != 0 {
		t.Errorf("stalled: %v", got)
	}
	r.reset()
	if got := r.rate(at(21000)); got != 0 {
		t.Errorf("after reset: %v", got)
	}
}
