package simulate

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrSweep: a --sweep argument is malformed or names an unknown setting.
var ErrSweep = errors.New("simulate: bad sweep")

// annotationPrefix is the KPA's annotation group.
const annotationPrefix = "autoscaling.knative.dev/"

// configPrefix forces a key to mean config-autoscaler's.
const configPrefix = "config-autoscaler/"

// annotationKeys are the KPA's revision annotations (without the prefix).
var annotationKeys = []string{
	"activation-scale", "class", "initial-scale", "max-scale", "metric", "metric-aggregation-algorithm",
	"min-scale", "panic-threshold-percentage", "panic-window-percentage", "scale-down-delay",
	"scale-to-zero-pod-retention-period", "target", "target-burst-capacity", "target-utilization-percentage",
	"window",
}

// configKeys are config-autoscaler's keys.
var configKeys = []string{
	"activator-capacity", "allow-zero-initial-scale", "container-concurrency-target-default",
	"container-concurrency-target-percentage", "enable-scale-to-zero", "initial-scale", "max-scale",
	"max-scale-down-rate", "max-scale-limit", "max-scale-up-rate", "min-scale", "panic-threshold-percentage",
	"panic-window-percentage", "pod-autoscaler-class", "requests-per-second-target-default", "scale-down-delay",
	"scale-to-zero-grace-period", "scale-to-zero-pod-retention-period", "stable-window", "target-burst-capacity",
}

// Sweep is one --sweep: a setting and the values to try.
type Sweep struct {
	Key    string
	Values []string
}

// ParseSweep parses "key=v1,v2,...". The key is a KPA annotation
// (target, window, ..., with or without autoscaling.knative.dev/), a
// config-autoscaler key (stable-window, max-scale-up-rate, ...; prefix it
// with config-autoscaler/ where an annotation of the same name exists),
// container-concurrency or cold-start.
func ParseSweep(arg string) (Sweep, error) {
	key, vals, ok := strings.Cut(arg, "=")
	key = strings.TrimSpace(key)
	if !ok || key == "" || strings.TrimSpace(vals) == "" {
		return Sweep{}, fmt.Errorf("%w: %q: want key=value1,value2,...", ErrSweep, arg)
	}
	sw := Sweep{Key: key}
	for _, v := range strings.Split(vals, ",") {
		if v = strings.TrimSpace(v); v == "" {
			return Sweep{}, fmt.Errorf("%w: %q: empty value", ErrSweep, arg)
		}
		sw.Values = append(sw.Values, v)
	}
	for _, v := range sw.Values {
		if _, err := Set(Options{}, key, v); err != nil {
			return Sweep{}, err
		}
	}
	return sw, nil
}

// Set returns o with one setting changed (see ParseSweep for the keys). o's
// maps are copied, not changed. Values are checked when the run resolves
// them, as a manifest's would be, except container-concurrency and
// cold-start, checked here.
func Set(o Options, key, value string) (Options, error) {
	o = copyOptions(o)
	switch {
	case key == "container-concurrency" || key == "containerConcurrency":
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			return o, fmt.Errorf("simulate: %s %q: want an integer >= 0", key, value)
		}
		o.ContainerConcurrency = n
	case key == "cold-start":
		d, err := time.ParseDuration(value)
		if err != nil || d < 0 {
			return o, fmt.Errorf("simulate: cold-start %q: want a duration >= 0 such as 5s", value)
		}
		o.ColdStart = d
	case strings.HasPrefix(key, configPrefix) && slices.Contains(configKeys, strings.TrimPrefix(key, configPrefix)):
		o.Config = setKey(o.Config, strings.TrimPrefix(key, configPrefix), value)
	case strings.HasPrefix(key, annotationPrefix) || strings.Contains(key, "/"):
		o.Annotations = setKey(o.Annotations, key, value)
	case slices.Contains(annotationKeys, key):
		o.Annotations = setKey(o.Annotations, annotationPrefix+key, value)
	case slices.Contains(configKeys, key):
		o.Config = setKey(o.Config, key, value)
	default:
		return o, fmt.Errorf("%w: unknown setting %q: want an autoscaling annotation (%s), a config-autoscaler key (%s), container-concurrency or cold-start",
			ErrSweep, key, strings.Join(annotationKeys, ", "), strings.Join(configKeys, ", "))
	}
	return o, nil
}

func setKey(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

// SweepResult is one configuration of a sweep.
type SweepResult struct {
	// Settings are the swept keys and this configuration's values, in the
	// order of the sweeps.
	Settings    [][2]string
	Summary     Summary
	MeetsBudget bool
}

// RunSweep runs every combination of the sweeps' values over base and
// returns them ordered: those whose p99 queue wait is within p99Budget (every
// one when the budget is 0) first, cheapest (fewest replica-seconds) first;
// then the others, lowest p99 first. Ties keep the combinations' order.
func RunSweep(trace []Request, base Options, sweeps []Sweep, p99Budget time.Duration) ([]SweepResult, error) {
	combos := [][][2]string{nil}
	for _, sw := range sweeps {
		var next [][][2]string
		for _, c := range combos {
			for _, v := range sw.Values {
				next = append(next, append(slices.Clone(c), [2]string{sw.Key, v}))
			}
		}
		combos = next
	}
	out := make([]SweepResult, 0, len(combos))
	for _, c := range combos {
		o := base
		for _, kv := range c {
			var err error
			if o, err = Set(o, kv[0], kv[1]); err != nil {
				return nil, err
			}
		}
		res, err := Run(trace, o)
		if err != nil {
			return nil, fmt.Errorf("%w (with %s)", err, describe(c))
		}
		meets := p99Budget == 0 || res.Summary.WaitP99 <= p99Budget.Seconds()
		out = append(out, SweepResult{Settings: c, Summary: res.Summary, MeetsBudget: meets})
	}
	slices.SortStableFunc(out, func(a, b SweepResult) int {
		switch {
		case a.MeetsBudget != b.MeetsBudget:
			if a.MeetsBudget {
				return -1
			}
			return 1
		case a.MeetsBudget:
			return cmp.Or(cmp.Compare(a.Summary.ReplicaSeconds, b.Summary.ReplicaSeconds), cmp.Compare(a.Summary.WaitP99, b.Summary.WaitP99))
		}
		return cmp.Or(cmp.Compare(a.Summary.WaitP99, b.Summary.WaitP99), cmp.Compare(a.Summary.ReplicaSeconds, b.Summary.ReplicaSeconds))
	})
	return out, nil
}

func describe(c [][2]string) string {
	parts := make([]string, len(c))
	for i, kv := range c {
		parts[i] = kv[0] + "=" + kv[1]
	}
	return strings.Join(parts, " ")
}
