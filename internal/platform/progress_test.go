package platform

import (
	"strings"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/adminapi"
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
