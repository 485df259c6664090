package controller

import (
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/autoscaler"
	"github.com/infera-dev/infera/internal/coldstart"
	"github.com/infera-dev/infera/internal/modelcache"
	"github.com/infera-dev/infera/internal/reconciler"
	"github.com/infera-dev/infera/internal/workload"
)

// publish makes the loop's state the admin view.
func (c *Controller) publish() {
	v := view{
		services: make([]*computed, 0, len(c.services)),
		running:  make(map[workload.RevisionID]bool, len(c.running)),
		runtimes: make(map[workload.RevisionID][2]string, len(c.running)),
		blocked:  maps.Clone(c.blocked),
	}
	for _, key := range slices.Sorted(maps.Keys(c.services)) {
		v.services = append(v.services, c.services[key])
	}
	for id, rev := range c.running {
		v.running[id] = true
		v.runtimes[id] = [2]string{rev.Container.Runtime, rev.Container.RuntimeReason}
	}
	c.mu.Lock()
	c.view = v
	c.mu.Unlock()
}

func (c *Controller) current() view {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.view
}

// Services lists every service with its status, by namespace and name.
func (c *Controller) Services() []adminapi.ServiceView {
	v := c.current()
	out := make([]adminapi.ServiceView, 0, len(v.services))
	for _, cs := range v.services {
		out = append(out, adminapi.NewServiceView(cs.service, cs.route))
	}
	return out
}

// Revisions lists every revision with its state, replicas and the scaler's last decision.
func (c *Controller) Revisions() []adminapi.RevisionView {
	v := c.current()
	decisions := c.scaling.snapshot()
	var out []adminapi.RevisionView
	for _, cs := range v.services {
		routed := map[workload.RevisionID]bool{}
		if cs.route != nil {
			for _, t := range cs.route.Targets {
				routed[t.Revision] = true
			}
		}
		for _, r := range cs.revisions {
			id := workload.NewRevisionID(r.Namespace, r.Name)
			st := c.sup.Status(id)
			rv := adminapi.RevisionView{
				Namespace: r.Namespace, Name: r.Name, Service: r.Labels[labelService],
				Generation: r.Labels["serving.knative.dev/configurationGeneration"], Routed: routed[id],
				ReadyReplicas: st.Ready, RunningReplicas: st.Running, Conditions: adminapi.Conditions(r.Status.Conditions),
				ContainerConcurrency: r.Spec.GetContainerConcurrency(),
				DatasetMode:          c.dsModes.of(id),
			}
			if len(r.Spec.Containers) > 0 {
				rv.Image = r.Spec.Containers[0].Image
			}
			rv.Ready, rv.Reason, rv.Message = adminapi.ReadyOf(r.Status.GetCondition(apis.ConditionReady))
			switch b, blocked := v.blocked[id]; {
			case blocked && b.pending:
				rv.State = adminapi.StatePending
			case blocked, st.Failed:
				rv.State = adminapi.StateFailed
			case v.running[id]:
				rv.State = adminapi.StateRunning
			default:
				rv.State = adminapi.StateRetired
			}
			if rt, ok := v.runtimes[id]; ok {
				rv.Runtime, rv.RuntimeReason = rt[0], rt[1]
			}
			rv.ImageDigest = st.ImageDigest
			rv.Events = st.Events
			if st.Unschedulable != "" && st.Ready == 0 && rv.State == adminapi.StateRunning {
				rv.State = adminapi.StatePending
				rv.Reason, rv.Message = "Unschedulable", st.Unschedulable
			}
			if rv.ImageDigest == "" && len(r.Status.ContainerStatuses) > 0 && rv.Runtime == reconciler.RuntimeDocker {
				rv.ImageDigest = r.Status.ContainerStatuses[0].ImageDigest
			}
			if d, ok := decisions[id]; ok {
				rv.Decision = decisionView(d)
			}
			if cs, ok := c.scaling.cold.Last(id); ok {
				rv.LastColdStart = coldStartView(cs)
			}
			out = append(out, rv)
		}
	}
	return out
}

func decisionView(d autoscaler.Decision) *adminapi.DecisionView {
	return &adminapi.DecisionView{
		Desired: d.Desired, DeciderDesired: d.DeciderDesired, Panic: d.Panic, ActivatorInPath: d.ActivatorInPath,
		ExcessBurstCapacity: d.ExcessBurstCapacity, StableConcurrency: d.StableConcurrency,
		PanicConcurrency: d.PanicConcurrency, Target: d.Target,
	}
}

func coldStartView(cs coldstart.ColdStart) *adminapi.ColdStartView {
	v := &adminapi.ColdStartView{At: cs.Begin(), Trigger: string(cs.Trigger), Replica: cs.Replica, TotalMs: millis(cs.Total())}
	for _, s := range cs.Spans() {
		ms := millis(s.Duration)
		switch s.Phase {
		case coldstart.Dataset:
			v.DatasetMs = &ms
		case coldstart.Placement:
			v.PlacementMs = ms
		case coldstart.Image:
			v.ImageMs = &ms
		case coldstart.ProcessStart:
			v.ProcessStartMs = ms
		case coldstart.Readiness:
			v.ReadinessMs = ms
		case coldstart.FirstByte:
			v.FirstByteMs = &ms
		}
	}
	return v
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Replicas lists every replica the supervisor runs.
func (c *Controller) Replicas() []adminapi.Replica {
	reps := c.sup.Replicas()
	slices.SortFunc(reps, func(a, b adminapi.Replica) int { return strings.Compare(a.Name, b.Name) })
	return reps
}

// Logs opens a replica's log.
func (c *Controller) Logs(replica string) (io.ReadCloser, error) { return c.sup.Logs(replica) }

// Datasets lists the model cache's datasets; without a model cache, none.
func (c *Controller) Datasets() []adminapi.DatasetView {
	if c.datasets == nil {
		return []adminapi.DatasetView{}
	}
	sts := c.datasets.Statuses()
	slices.SortFunc(sts, func(a, b modelcache.DatasetStatus) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	out := make([]adminapi.DatasetView, 0, len(sts))
	for _, s := range sts {
		mode := "prefetch"
		switch {
		case s.InPlace:
			mode = "in-place"
		case s.LazyMount != "":
			mode = "lazy" // replicas started while it streams read through the FUSE mount
		}
		out = append(out, adminapi.DatasetView{
			Namespace: s.Namespace, Name: s.Name, Phase: string(s.Phase), Message: s.Message,
			Bytes: s.Done, Total: s.Total, Files: s.Files, FilesDone: s.FilesDone,
			Rate: s.Rate, ETASeconds: s.ETA.Seconds(), Level: string(s.Level), LevelPath: s.LevelPath,
			Path: s.Path, InPlace: s.InPlace, Mode: mode, CachedBytes: s.CachedBytes, LastUsed: s.LastUsed,
			Holders: s.Holders, Attempts: s.Attempts, NextRetry: s.NextRetry,
		})
	}
	return out
}

// DataLoads lists DataLoads with their status; without a model cache, none.
func (c *Controller) DataLoads() []adminapi.DataLoadView {
	if c.datasets == nil {
		return []adminapi.DataLoadView{}
	}
	sts := c.datasets.DataLoadStatuses()
	slices.SortFunc(sts, func(a, b modelcache.DataLoadStatus) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	out := make([]adminapi.DataLoadView, 0, len(sts))
	for _, s := range sts {
		out = append(out, adminapi.DataLoadView{
			Namespace: s.Namespace, Name: s.Name, Dataset: s.Dataset, Policy: string(s.Policy), Phase: string(s.Phase),
			Message: s.Message, Duration: s.Duration, Runs: s.Runs, LastScheduleTime: s.LastScheduleTime,
			LastSuccessfulTime: s.LastSuccessfulTime, NextScheduleTime: s.NextScheduleTime,
		})
	}
	return out
}
