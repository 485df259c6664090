package imagecache

import (
	"fmt"
	"strings"
	"time"
)

// State is where one image of a cache is (the diagram is in doc.go).
type State string

// Image states.
const (
	StatePending State = "Pending" // not looked up in the engine yet, or waiting its turn to pull
	StatePulling State = "Pulling" // being pulled; see Current and Total
	StateReady   State = "Ready"   // in the engine: replicas start from it without a pull
	StateFailed  State = "Failed"  // the last pull failed (Reason); retried at NextRetry
	StateEvicted State = "Evicted" // taken out of the cache (Reason names retentionDays or imageCacheSize)
)

// Phase is an ImageCache's status.phase, in ECI's words (DescribeImageCaches' Status and the
// ImageCache CRD's phase: Preparing, Creating, Ready, Failed, Updating, UpdateFailed). Here
// they mean:
//
//	Preparing     never Ready, and no image of it looked up in the engine yet (Run has not reached it)
//	Creating      some image is waiting to be pulled or pulling, and the cache was never Ready
//	Ready         every image is Ready or Evicted
//	Failed        some image failed to pull (or is not a valid reference), cache never Ready
//	Updating      as Creating, for a cache that was Ready before (an image added, one gone)
//	UpdateFailed  as Failed, for a cache that was Ready before
//
// Failed pulls are retried with back-off, so Failed and UpdateFailed are not final (an invalid
// reference is): the cache goes back to Creating or Updating on the next attempt.
type Phase string

// ImageCache phases.
const (
	PhasePreparing    Phase = "Preparing"
	PhaseCreating     Phase = "Creating"
	PhaseReady        Phase = "Ready"
	PhaseFailed       Phase = "Failed"
	PhaseUpdating     Phase = "Updating"
	PhaseUpdateFailed Phase = "UpdateFailed"
)

// ImageStatus is one image of a cache.
type ImageStatus struct {
	Image string // as the cache lists it
	Ref   string // normalized: "docker.io/library/app:v1"
	State State
	// Reason says why an image is not Ready: the engine's message for a failed pull, what
	// evicted it, or what it waits for.
	Reason string
	ID     string // the image ID, "sha256:..."
	Digest string // the repo digest reference ("repo@sha256:..."), or the ID when the engine knows none
	Size   int64  // bytes
	// Current and Total are the bytes downloaded and known to download while Pulling.
	Current, Total int64
	// Owned is true when infera pulled the image: only owned images are ever removed.
	Owned    bool
	PulledAt time.Time // when infera pulled it (zero when not owned)
	LastUsed time.Time // when a replica last started from it (Touch)
	// Attempts counts the failed pulls in a row; NextRetry is when the next one starts.
	Attempts  int
	NextRetry time.Time
}

// CacheStatus is one ImageCache.
type CacheStatus struct {
	Name    string
	Phase   Phase
	Message string
	Images  []ImageStatus // in the cache's order
	// Size is the bytes of its Ready images; OwnedSize those of the Ready images infera
	// pulled, which is what imageCacheSize bounds.
	Size      int64
	OwnedSize int64
}

// summarize gives a cache its phase and message from its images' states; unknown counts
// those not looked up in the engine yet, wasReady says whether the cache has been Ready
// before, over is the policy's note when the cache stays over its size.
func summarize(images []ImageStatus, unknown int, wasReady bool, over string) (Phase, string) {
	var failed, waiting, evicted []ImageStatus
	for _, im := range images {
		switch im.State {
		case StateFailed:
			failed = append(failed, im)
		case StatePending, StatePulling:
			waiting = append(waiting, im)
		case StateEvicted:
			evicted = append(evicted, im)
		}
	}
	pick := func(ready, notReady Phase) Phase {
		if wasReady {
			return ready
		}
		return notReady
	}
	switch {
	case len(failed) > 0:
		f := failed[0]
		msg := fmt.Sprintf("%s: %s", f.Image, f.Reason)
		if !f.NextRetry.IsZero() {
			msg += fmt.Sprintf(" (retry at %s)", f.NextRetry.UTC().Format(time.RFC3339))
		}
		if len(failed) > 1 {
			msg += fmt.Sprintf("; %d more failed", len(failed)-1)
		}
		return pick(PhaseUpdateFailed, PhaseFailed), msg
	case !wasReady && len(images) > 0 && unknown == len(images):
		msg := reasonNotLookedUp
		if r := images[0].Reason; r != reasonNotLookedUp && r != "" {
			msg += ": " + r
		}
		return PhasePreparing, msg
	case len(waiting) > 0:
		var pulling string
		for _, im := range waiting {
			if im.State == StatePulling {
				pulling = im.Image
			}
		}
		msg := fmt.Sprintf("%d of %d images to pull", len(waiting), len(images))
		if pulling != "" {
			msg = fmt.Sprintf("pulling %s; %s", pulling, msg)
		}
		return pick(PhaseUpdating, PhaseCreating), msg
	}
	var parts []string
	if len(evicted) > 0 {
		names := make([]string, len(evicted))
		for i, im := range evicted {
			names[i] = im.Image
		}
		parts = append(parts, fmt.Sprintf("%d of %d images evicted (%s)", len(evicted), len(images), strings.Join(names, ", ")))
	}
	if over != "" {
		parts = append(parts, over)
	}
	return PhaseReady, strings.Join(parts, "; ")
}

const reasonNotLookedUp = "not looked up in the engine yet"
