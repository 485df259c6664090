package autoscaler

import (
	"errors"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/workload"
)

func TestFixed(t *testing.T) {
	now := time.Unix(0, 0)
	const (
		minScale     = "autoscaling.knative.dev/min-scale"
		maxScale     = "autoscaling.knative.dev/max-scale"
		initialScale = "autoscaling.knative.dev/initial-scale"
	)
	for _, tc := range []struct {
		name        string
		config      map[string]string // config-autoscaler
		annotations map[string]string
		want        int
		wantPoke    bool
		wantErr     error
	}{
		{name: "default initial scale", want: 1},
		{name: "min-scale above initial", annotations: map[string]string{minScale: "3"}, want: 3},
		{name: "initial above min", annotations: map[string]string{initialScale: "4", minScale: "2"}, want: 4},
		{name: "max-scale caps", annotations: map[string]string{initialScale: "4", maxScale: "2"}, want: 2},
		{name: "zero initial scale refused unless the cluster allows it, as Knative", annotations: map[string]string{initialScale: "0"}, wantErr: ErrInvalidAnnotations},
		{name: "zero initial scale: a request brings one", config: map[string]string{"allow-zero-initial-scale": "true"},
			annotations: map[string]string{initialScale: "0"}, want: 0, wantPoke: true},
		{name: "config-autoscaler initial-scale", config: map[string]string{"initial-scale": "2"}, want: 2},
		{name: "bad annotation", annotations: map[string]string{minScale: "two"}, wantErr: ErrInvalidAnnotations},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFixed(nil)
			if tc.config != nil {
				cc, err := ParseClusterConfig(tc.config)
				if err != nil {
					t.Fatal(err)
				}
				if err := f.SetConfig(now, cc); err != nil {
					t.Fatal(err)
				}
			}
			id := workload.RevisionID("default/x-00001")
			err := f.Upsert(now, id, tc.annotations, 0)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Upsert error = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			d, _ := f.Decision(id)
			if d.Desired != tc.want || !d.ActivatorInPath {
				t.Errorf("decision = %+v, want desired %d with the activator in path", d, tc.want)
			}
			if _, poked := f.Poke(now, workload.Stat{Revision: id, Time: now}, 0); poked {
				t.Error("a stat without load poked")
			}
			d, poked := f.Poke(now, workload.Stat{Revision: id, Time: now, Concurrency: 1, Requests: 1}, 0)
			if poked != tc.wantPoke || (poked && d.Desired != 1) {
				t.Errorf("Poke = %+v, %v; want poked %v to 1", d, poked, tc.wantPoke)
			}
			if f.Tick(now, nil) != nil {
				t.Error("Tick decided something")
			}
		})
	}
}

func TestFixedSetConfigRescales(t *testing.T) {
	f := NewFixed(nil)
	id := workload.RevisionID("default/x-00001")
	if err := f.Upsert(time.Time{}, id, nil, 0); err != nil {
		t.Fatal(err)
	}
	cc, _ := ParseClusterConfig(map[string]string{"initial-scale": "3"})
	if err := f.SetConfig(time.Time{}, cc); err != nil {
		t.Fatal(err)
	}
	if d, _ := f.Decision(id); d.Desired != 3 {
		t.Fatalf("desired %d after initial-scale 3", d.Desired)
	}
}
