package imagecache

import (
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	im := func(image string, s State, reason string) ImageStatus {
		return ImageStatus{Image: image, State: s, Reason: reason}
	}
	unknown := func(image string) ImageStatus { return im(image, StatePending, reasonNotLookedUp) }
	tests := []struct {
		name     string
		images   []ImageStatus
		unknown  int
		wasReady bool
		over     string
		phase    Phase
		message  string // a substring
	}{
		{"not looked up", []ImageStatus{unknown("a"), unknown("b")}, 2, false, "", PhasePreparing, "not looked up"},
		{"one looked up, one pulling", []ImageStatus{unknown("a"), im("b", StatePulling, "")}, 1, false, "", PhaseCreating, "pulling b; 2 of 2 images to pull"},
		{"waiting to pull", []ImageStatus{im("a", StateReady, ""), im("b", StatePending, "waiting to be pulled")}, 0, false, "", PhaseCreating, "1 of 2 images to pull"},
		{"ready", []ImageStatus{im("a", StateReady, "")}, 0, false, "", PhaseReady, ""},
		{"ready with evicted", []ImageStatus{im("a", StateReady, ""), im("b", StateEvicted, "x")}, 0, true, "", PhaseReady, "1 of 2 images evicted (b)"},
		{"ready over the bound", []ImageStatus{im("a", StateReady, "")}, 0, true, "over imageCacheSize", PhaseReady, "over imageCacheSize"},
		{"failed", []ImageStatus{im("a", StateReady, ""), im("b", StateFailed, "401 Unauthorized"), im("c", StatePulling, "")}, 0, false, "", PhaseFailed, "b: 401 Unauthorized"},
		{"failed twice", []ImageStatus{im("a", StateFailed, "x"), im("b", StateFailed, "y")}, 0, false, "", PhaseFailed, "1 more failed"},
		{"updating", []ImageStatus{im("a", StateReady, ""), im("b", StatePulling, "")}, 0, true, "", PhaseUpdating, "pulling b"},
		{"updating after a restart", []ImageStatus{unknown("a")}, 1, true, "", PhaseUpdating, ""},
		{"update failed", []ImageStatus{im("a", StateReady, ""), im("b", StateFailed, "manifest unknown")}, 0, true, "", PhaseUpdateFailed, "manifest unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			phase, msg := summarize(tt.images, tt.unknown, tt.wasReady, tt.over)
			if phase != tt.phase || !strings.Contains(msg, tt.message) || (tt.message == "" && msg != "" && tt.phase == PhaseReady) {
				t.Errorf("summarize = %s %q, want %s containing %q", phase, msg, tt.phase, tt.message)
			}
		})
	}
}
