package coldstart

import (
	"time"

	"github.com/infera-dev/infera/internal/workload"
)

// Phase is one part of a cold start; its value is the metric's phase label.
type Phase string

// The phases, in the order they happen.
const (
	// Dataset: the revision Pending on a Dataset (DatasetNotReady) until it could start.
	Dataset Phase = "dataset"
	// Placement: the poke (the held request's arrival) or the start decision, to the replica
	// created.
	Placement Phase = "placement"
	// Image: the replica created to its image present: an image pull, or the engine (or an
	// ImageCache) finding it. Only replicas that run images have it.
	Image Phase = "image"
	// ProcessStart: the replica created (spawned) to its process running, crash restarts and
	// back-off before it became Ready included.
	ProcessStart Phase = "process_start"
	// Readiness: the process running to the replica's first Ready.
	Readiness Phase = "readiness"
	// FirstByte: Ready to the held request's first response byte from its replica.
	FirstByte Phase = "first_byte"
)

// Phases lists every phase in the order they happen.
var Phases = []Phase{Dataset, Placement, Image, ProcessStart, Readiness, FirstByte}

// Trigger is why a cold start happened.
type Trigger string

const (
	// TriggerRequest: a request waited for a revision with no ready replica (scale from zero).
	TriggerRequest Trigger = "request"
	// TriggerFirstStart: a revision that had not run yet was started with replicas wanted.
	TriggerFirstStart Trigger = "first-start"
)

// ColdStart is one cold start: its timeline, each instant on the clock of the component that
// reported it. A zero instant did not happen.
type ColdStart struct {
	Revision workload.RevisionID
	Service  string // namespace/name of the revision's service
	Replica  string // the replica whose start it was
	Trigger  Trigger

	DatasetWait time.Time // the revision went Pending on a Dataset
	Demand      time.Time // the held request arrived (TriggerRequest), or the start was decided
	Created     time.Time // the replica was created
	ImageReady  time.Time // its image was present (replicas that run images)
	Started     time.Time // its process was running (the one that became Ready)
	Ready       time.Time // it was first Ready
	FirstByte   time.Time // the held request's first response byte
}

// Span is how long one phase took.
type Span struct {
	Phase    Phase
	Duration time.Duration
}

// Begin is when the cold start began: the start of the Dataset wait, else the demand.
func (c ColdStart) Begin() time.Time {
	if !c.DatasetWait.IsZero() {
		return c.DatasetWait
	}
	return c.Demand
}

// Spans are the phases that happened, in order. Each starts where the one before ended; an
// instant earlier than the timeline's last one counts as that one, so no span is negative and
// the spans add up to Total.
func (c ColdStart) Spans() []Span {
	out := make([]Span, 0, len(Phases))
	at := c.Begin()
	step := func(p Phase, end time.Time) {
		if end.Before(at) {
			end = at
		}
		out = append(out, Span{p, end.Sub(at)})
		at = end
	}
	if !c.DatasetWait.IsZero() {
		step(Dataset, c.Demand)
	}
	step(Placement, c.Created)
	if !c.ImageReady.IsZero() {
		step(Image, c.ImageReady)
	}
	step(ProcessStart, c.Started)
	step(Readiness, c.Ready)
	if !c.FirstByte.IsZero() {
		step(FirstByte, c.FirstByte)
	}
	return out
}

// Duration is how long phase p took, and whether it happened.
func (c ColdStart) Duration(p Phase) (time.Duration, bool) {
	for _, s := range c.Spans() {
		if s.Phase == p {
			return s.Duration, true
		}
	}
	return 0, false
}

// Total is the whole cold start: the sum of its spans.
func (c ColdStart) Total() time.Duration {
	var d time.Duration
	for _, s := range c.Spans() {
		d += s.Duration
	}
	return d
}
