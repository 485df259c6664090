package platform

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/clock"
)

func TestProgress(t *testing.T) {
	frames := [][]adminapi.DatasetView{
		{{Namespace: "default", Name: "m", Phase: "Fetching", Bytes: 0, Total: 4 << 30}},
		{{Namespace: "default", Name: "m", Phase: "Fetching", Bytes: 1 << 30, Total: 4 << 30, Rate: 210e6, ETASeconds: 15.4}},
		{{Namespace: "default", Name: "m", Phase: "Fetching", Bytes: 2 << 30, Total: 4 << 30, Rate: 210e6, ETASeconds: 10}},
		{{Namespace: "default", Name: "m", Phase: "Ready", Bytes: 4 << 30, Total: 4 << 30}},
		{{Namespace: "default", Name: "m", Phase: "Ready", Bytes: 4 << 30, Total: 4 << 30}},
	}
	for _, tc := range []struct {
		name string
		tty  bool
		want string
	}{
		{"plain lines, every 2 s, then ready once", false,
			"dataset default/m: 0B of 4.0Gi (0%)\n" +
				"dataset default/m: 2.0Gi of 4.0Gi (50%), 210.0 MB/s, ETA 10s\n" +
				"dataset default/m: ready, 4.0Gi cached\n"},
		{"a bar redrawn in place each second", true,
			"[..............................] dataset default/m: 0B of 4.0Gi (0%)\n" +
				"\x1b[1A\x1b[J[#######.......................] dataset default/m: 1.0Gi of 4.0Gi (25%), 210.0 MB/s, ETA 15s\n" +
				"\x1b[1A\x1b[J[###############...............] dataset default/m: 2.0Gi of 4.0Gi (50%), 210.0 MB/s, ETA 10s\n" +
				"\x1b[1A\x1b[Jdataset default/m: ready, 4.0Gi cached\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			i := 0
			p := &progress{w: &out, tty: tc.tty, plainEvery: 2 * time.Second, list: func() []adminapi.DatasetView { return frames[i] }}
			start := time.Unix(1000, 0)
			for i = range frames {
				p.step(start.Add(time.Duration(i) * time.Second))
			}
			if out.String() != tc.want {
				t.Errorf("output:\n%q\nwant\n%q", out.String(), tc.want)
			}
		})
	}
}

func TestFollowDatasets(t *testing.T) {
	fetching := adminapi.DatasetView{Namespace: "default", Name: "m", Phase: "Fetching", Bytes: 1 << 30, Total: 2 << 30}
	ready := adminapi.DatasetView{Namespace: "default", Name: "m", Phase: "Ready", Bytes: 2 << 30, Total: 2 << 30}
	failed := adminapi.DatasetView{Namespace: "default", Name: "m", Phase: "Failed", Message: "access denied (403)"}
	other := adminapi.DatasetView{Namespace: "default", Name: "other", Phase: "Fetching", Total: 1}
	for _, tc := range []struct {
		name    string
		frames  [][]adminapi.DatasetView
		want    string
		wantErr string
	}{
		{"until ready, others ignored", [][]adminapi.DatasetView{{fetching, other}, {fetching, other}, {ready, other}},
			"dataset default/m: 1.0Gi of 2.0Gi (50%)\ndataset default/m: ready, 2.0Gi cached\n", ""},
		{"a failure is the error", [][]adminapi.DatasetView{{fetching}, {failed}},
			"dataset default/m: 1.0Gi of 2.0Gi (50%)\ndataset default/m: failed: access denied (403)\n", "dataset failed: default/m: access denied (403)"},
		{"already ready: returns at once", [][]adminapi.DatasetView{{ready}}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var out strings.Builder
				i := 0
				list := func(context.Context) ([]adminapi.DatasetView, error) {
					f := tc.frames[min(i, len(tc.frames)-1)]
					i++
					return f, nil
				}
				err := FollowDatasets(t.Context(), &out, false, clock.Real{}, list, []string{"default/m"})
				if (err == nil) != (tc.wantErr == "") || (err != nil && err.Error() != tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if out.String() != tc.want {
					t.Errorf("output %q, want %q", out.String(), tc.want)
				}
			})
		})
	}
}
