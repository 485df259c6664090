package autoscaler

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"knative.dev/serving/pkg/autoscaler/aggregation"
)

// knativeBuckets is what both of Knative's bucket types offer.
type knativeBuckets interface {
	Record(time.Time, float64)
	WindowAverage(time.Time) float64
	IsEmpty(time.Time) bool
	ResizeWindow(time.Duration)
}

func newKnativeBuckets(alg Algorithm, window time.Duration) knativeBuckets {
	if alg == WeightedExponential {
		return aggregation.NewWeightedFloat64Buckets(window, BucketSize)
	}
	return aggregation.NewTimedFloat64Buckets(window, BucketSize)
}

func TestBucketsLinearExamples(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tests := []struct {
		name   string
		writes map[float64]float64 // second -> value
		now    float64
		want   float64
	}{
		{"empty", nil, 0, 0},
		{"one write", map[float64]float64{0: 5}, 0, 5},
		{"same second adds", map[float64]float64{0: 5, 0.5: 3}, 0.9, 8},
		{"partial window averages over written seconds", map[float64]float64{0: 2, 1: 4, 2: 6}, 2, 4},
		{"gap counts as zero", map[float64]float64{0: 6, 3: 6}, 3, 3},
		{"seconds since last write shrink the window", map[float64]float64{0: 6}, 5, 6},
		{"a whole window without data is zero", map[float64]float64{0: 6}, 10, 0},
		{"just inside the window", map[float64]float64{0: 6}, 9.99, 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuckets(Linear, 10*time.Second)
			for _, s := range sortedKeys(tc.writes) {
				b.Record(at(s), tc.writes[s])
			}
			if got := b.WindowAverage(at(tc.now)); got != tc.want {
				t.Errorf("WindowAverage = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBucketsWeightedExample(t *testing.T) {
	// Knative's documented example: [10, 10, 5, 5] newest last, coefficient
	// 0.6 gives 5·0.6 + 5·0.6·0.4 + 10·0.6·0.4² + 10·0.6·0.4³ = 5.544.
	t0 := time.Unix(1_700_000_000, 0)
	b := NewBuckets(WeightedExponential, 4*time.Second)
	b.smoothing = 0.6
	for i, v := range []float64{10, 10, 5, 5} {
		b.Record(t0.Add(time.Duration(i)*time.Second), v)
	}
	if got := b.WindowAverage(t0.Add(3 * time.Second)); math.Abs(got-5.544) > 1e-12 {
		t.Errorf("WindowAverage = %v, want 5.544", got)
	}
	// 60 buckets would decay slower than the minimum; 6 decay faster.
	if c := smoothingCoefficient(60); c != minSmoothing {
		t.Errorf("smoothing(60) = %v, want %v", c, minSmoothing)
	}
	if c, want := smoothingCoefficient(6), 1-math.Pow(0.0001, 1.0/6); c != want {
		t.Errorf("smoothing(6) = %v, want %v", c, want)
	}
}

func sortedKeys(m map[float64]float64) []float64 {
	keys := make([]float64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] < keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	return keys
}

// TestBucketsMatchKnative drives ours and Knative's buckets with the same
// random series, both algorithms, and compares every average. Writes come
// in bursts, with gaps shorter and longer than the window, several per
// second, some back in time; windows are resized mid-series.
//
// Knative's ResizeWindow reads the wall clock, so ours is given time.Now()
// at a resize, and each series is laid out so that its resizes happen both
// with recent data (buckets carried over) and with stale data.
// A resize whose time since the last write is within 2 s of the window is
// skipped: there a second's disagreement about "now" would decide.
func TestBucketsMatchKnative(t *testing.T) {
	const runs = 400
	rng := rand.New(rand.NewPCG(1, 2))
	compared, exact, resizes, kept := 0, 0, 0, 0
	for run := range runs {
		alg := Algorithm(run % 2)
		window := time.Duration(1+rng.IntN(90)) * time.Second
		if rng.IntN(5) == 0 {
			window += time.Duration(rng.IntN(1000)) * time.Millisecond // allowed by the type
		}
		ours := NewBuckets(alg, window)
		theirs := newKnativeBuckets(alg, window)

		type step struct {
			at     time.Duration // virtual time
			v      float64
			write  bool
			resize time.Duration
		}
		steps := 200 + rng.IntN(400)
		plan := make([]step, 0, steps)
		vt, firstResize := time.Duration(0), time.Duration(-1)
		for range steps {
			switch r := rng.IntN(100); {
			case r < 70:
				vt += time.Duration(rng.IntN(1500)) * time.Millisecond
			case r < 88:
				vt += time.Duration(rng.Int64N(int64(2*window) + 1))
			case r < 95:
				vt -= time.Duration(rng.Int64N(int64(window) + 1)) // back in time
			default:
				vt += time.Duration(rng.IntN(3600)) * time.Second
			}
			st := step{at: vt, write: rng.IntN(4) != 0, v: math.Round(rng.Float64()*1e5) / 100}
			if rng.IntN(10) == 0 {
				st.v = rng.Float64() * 1e6
			}
			if rng.IntN(100) < 2 {
				st = step{at: vt, resize: time.Duration(1+rng.IntN(90)) * time.Second}
				if firstResize < 0 {
					firstResize = vt
				}
			}
			plan = append(plan, st)
		}
		// Half the runs have their first resize at the wall clock (recent
		// data: buckets carried over), half end at it (resizes mostly find
		// the data a window old: buckets dropped).
		anchor := time.Now()
		if firstResize >= 0 && run%4 < 2 {
			anchor = anchor.Add(-firstResize)
		} else {
			anchor = anchor.Add(-vt)
		}
		for i, st := range plan {
			now := anchor.Add(st.at)
			switch {
			case st.resize != 0:
				wall := time.Now()
				gap := sub(wall.Unix(), ours.lastWrite)
				if d := gap - ours.Window(); d > -2*time.Second && d < 2*time.Second {
					continue
				}
				if gap <= ours.Window() {
					kept++ // the branch that carries buckets over
				}
				theirs.ResizeWindow(st.resize)
				ours.ResizeWindow(time.Now(), st.resize)
				resizes++
			case st.write:
				theirs.Record(now, st.v)
				ours.Record(now, st.v)
			}
			for _, q := range []time.Time{now, now.Add(700 * time.Millisecond), now.Add(ours.Window() / 2), now.Add(-3 * time.Second)} {
				got, want := ours.WindowAverage(q), theirs.WindowAverage(q)
				compared++
				if got == want {
					exact++
				}
				if math.Abs(got-want) > 1e-9 || math.IsNaN(got) != math.IsNaN(want) {
					t.Fatalf("run %d (%v, window %v) step %d: WindowAverage = %v, Knative %v", run, alg, window, i, got, want)
				}
				if g, w := ours.IsEmpty(q), theirs.IsEmpty(q); g != w {
					t.Fatalf("run %d step %d: IsEmpty = %v, Knative %v", run, i, g, w)
				}
			}
		}
	}
	t.Logf("%d averages compared over %d runs (%d resizes, %d keeping data): %d bit-identical",
		compared, runs, resizes, kept, exact)
	if compared != exact {
		t.Errorf("%d averages within 1e-9 but not bit-identical", compared-exact)
	}
}

func TestBucketsRelease(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	for _, alg := range []Algorithm{Linear, WeightedExponential} {
		b := NewBuckets(alg, 10*time.Second)
		if b.buckets != nil {
			t.Fatal("buckets allocated before the first write")
		}
		b.Record(t0, 3)
		b.Release(t0.Add(5 * time.Second))
		if b.buckets == nil {
			t.Fatal("released with data in the window")
		}
		b.Release(t0.Add(11 * time.Second))
		if b.buckets != nil {
			t.Fatal("not released after an idle window")
		}
		if got := b.WindowAverage(t0.Add(12 * time.Second)); got != 0 {
			t.Errorf("%v: average after release = %v", alg, got)
		}
		b.Record(t0.Add(20*time.Second), 4)
		fresh := NewBuckets(alg, 10*time.Second)
		fresh.Record(t0.Add(20*time.Second), 4)
		if got, want := b.WindowAverage(t0.Add(20*time.Second)), fresh.WindowAverage(t0.Add(20*time.Second)); got != want {
			t.Errorf("%v: average after new data = %v, want %v", alg, got, want)
		}
	}
}
