package platform

import (
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/workload"
)

func TestFixedScaler(t *testing.T) {
	now := time.Unix(0, 0)
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        int
		wantPoke    bool
		wantErr     bool
	}{
		{"default initial scale", nil, 1, false, false},
		{"min-scale above initial", map[string]string{annMinScale: "3"}, 3, false, false},
		{"initial above min", map[string]string{annInitialScale: "4", annMinScale: "2"}, 4, false, false},
		{"zero initial scale: a request brings one", map[string]string{annInitialScale: "0"}, 0, true, false},
		{"bad annotation", map[string]string{annMinScale: "two"}, 0, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFixedScaler()
			id := workload.RevisionID("default/x-00001")
			d, err := f.Upsert(now, workload.Revision{ID: id, Annotations: tc.annotations})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Upsert error = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if d.Desired != tc.want {
				t.Errorf("desired = %d, want %d", d.Desired, tc.want)
			}
			d, poked := f.Poke(now, id)
			if poked != tc.wantPoke || (poked && d.Desired != 1) {
				t.Errorf("Poke = %+v, %v; want poked %v to 1", d, poked, tc.wantPoke)
			}
		})
	}
}

func TestChangeString(t *testing.T) {
	c := Change{Kind: "Service", Group: "serving.knative.dev", Name: "llm", Action: "created"}
	if got := c.String(); got != "service.serving.knative.dev/llm created" {
		t.Errorf("= %q", got)
	}
	if got := (Change{Kind: "Secret", Name: "token", Action: "deleted"}).String(); got != "secret/token deleted" {
		t.Errorf("= %q", got)
	}
}
