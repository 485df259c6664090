package placement

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	corev1 "k8s.io/api/core/v1"

	"github.com/infera-dev/infera/internal/ack"
)

func ptr[T any](v T) *T { return &v }

// articlePolicy is the ResourcePolicy of the reference article: ecs up to 10, more ecs,
// then eci.
func articlePolicy() ack.ResourcePolicySpec {
	return ack.ResourcePolicySpec{
		Selector: map[string]string{"serving.knative.dev/service": "helloworld-go"},
		Strategy: ack.StrategyPrefer,
		Units: []ack.Unit{
			{Resource: ack.ResourceECS, Max: ptr[int32](10), NodeSelector: map[string]string{"key2": "value2"}},
			{Resource: ack.ResourceECS, NodeSelector: map[string]string{"key3": "value3"}},
			{Resource: ack.ResourceECI},
		},
	}
}

// machine is three pools: a (GPU 0, 4 cores), b (GPU 1), and the eci burst pool.
func machine() Capacity {
	return Capacity{
		Pools: []Pool{
			{Name: "a", Kind: KindECS, Labels: map[string]string{"key2": "value2"}, GPUs: []int{0}, CPUMilli: 4000},
			{Name: "b", Kind: KindECS, Labels: map[string]string{"key3": "value3", "zone": "x"}, GPUs: []int{1}},
			{Name: "burst", Kind: KindECI},
		},
		GPUs: gpus(2, 80),
	}
}

// in is n replicas of rev-old in unit u, created a minute apart from t0.
func in(u, n int, prefix string) []UnitPlacement {
	out := make([]UnitPlacement, n)
	for i := range out {
		out[i] = UnitPlacement{Replica: fmt.Sprintf("%s%d", prefix, i), Revision: "rev-old", Unit: u,
			Labels: map[string]string{"rev": "old"}, Created: t0.Add(time.Duration(i) * time.Minute), CPUMilli: 100}
	}
	return out
}

func TestChooseUnit(t *testing.T) {
	min1 := time.Minute
	terminating := func(ps []UnitPlacement, n int) []UnitPlacement {
		for i := range n {
			ps[i].Terminating = true
		}
		return ps
	}
	previous := func(ps []UnitPlacement) []UnitPlacement {
		for i := range ps {
			ps[i].Previous = true
		}
		return ps
	}
	cpuFull := func(c *Capacity) { c.Used = map[string]Usage{"a": {CPUMilli: 4000}} }
	gpu0Full := func(c *Capacity) { c.Reserved = []Reservation{share("g", 0, 80)} }
	tests := []struct {
		name    string
		policy  func(*ack.ResourcePolicySpec)
		cap     func(*Capacity)
		placed  []UnitPlacement
		req     UnitRequest
		pending time.Duration // before now
		want    string        // "unit/pool" or "unit/pool evict=x,y"
		gpu     []string
		err     error
		msg     []string
		waiting int
		retryAt time.Duration // after now; 0: none
	}{
		{name: "first unit while empty", want: "0/a"},
		{name: "first unit below max", placed: in(0, 9, "r"), want: "0/a"},
		{name: "next unit at max", placed: in(0, 10, "r"), want: "1/b"},
		{name: "the replica itself does not count", placed: in(0, 10, "r"), req: UnitRequest{Request: Request{Replica: "r3"}}, want: "0/a"},
		{name: "terminating replicas do not count by default", placed: terminating(in(0, 10, "r"), 1), want: "0/a"},
		{name: "ignoreTerminatingPod false counts them", placed: terminating(in(0, 10, "r"), 1),
			policy: func(p *ack.ResourcePolicySpec) { p.IgnoreTerminatingPod = ptr(false) }, want: "1/b"},
		{name: "previous replicas count by default", placed: previous(in(0, 10, "r")), want: "1/b"},
		{name: "ignorePreviousPod leaves them out", placed: previous(in(0, 10, "r")),
			policy: func(p *ack.ResourcePolicySpec) { p.IgnorePreviousPod = ptr(true) }, want: "0/a"},
		{name: "matchLabelKeys: max per group", placed: in(0, 10, "r"),
			policy: func(p *ack.ResourcePolicySpec) { p.MatchLabelKeys = []string{"rev"} },
			req:    UnitRequest{Labels: map[string]string{"rev": "new"}}, want: "0/a"},
		{name: "matchLabelKeys: same group is full", placed: in(0, 10, "r"),
			policy: func(p *ack.ResourcePolicySpec) { p.MatchLabelKeys = []string{"rev"} },
			req:    UnitRequest{Labels: map[string]string{"rev": "old"}}, want: "1/b"},
		{name: "matchLabelKeys: a replica without the label is rejected",
			policy: func(p *ack.ResourcePolicySpec) { p.MatchLabelKeys = []string{"rev"} }, err: ErrMissingLabel},
		{name: "lack of cpu moves on by default", cap: cpuFull, req: UnitRequest{CPUMilli: 500}, want: "1/b"},
		{name: "lack of GPU memory moves on, GPU placed in the next pool", cap: gpu0Full,
			req: UnitRequest{Request: Request{GPUMemGiB: 3}}, want: "1/b", gpu: []string{"1:3 GiB"}},
		{name: "eci takes the burst when every ecs unit lacks", cap: func(c *Capacity) {
			cpuFull(c)
			c.Pools[1].MemoryBytes, c.Used["b"] = 8*GiB, Usage{MemoryBytes: 8 * GiB}
		}, req: UnitRequest{CPUMilli: 500, MemoryBytes: GiB}, want: "2/burst"},
		{name: "a GPU request cannot burst to a pool without GPUs", cap: func(c *Capacity) {
			c.Reserved = []Reservation{share("g", 0, 80), share("h", 1, 80)}
		}, req: UnitRequest{Request: Request{GPUMemGiB: 3}}, err: ErrNoUnit, waiting: -1,
			msg: []string{"unit 0 (ecs): pool a: 0/1 GPUs fit 3 GiB: GPU 0 has 0 GiB free of 80 GiB",
				"unit 1 (ecs): pool b: 0/1 GPUs fit 3 GiB: GPU 1 has 0 GiB free of 80 GiB", "unit 2 (eci): pool burst: no GPUs"}},
		{name: "ExceedMax waits in a unit with max", cap: cpuFull, req: UnitRequest{CPUMilli: 500},
			policy: func(p *ack.ResourcePolicySpec) { p.WhenTryNextUnits.Policy = ack.ExceedMax },
			err:    ErrNoUnit, waiting: 0, msg: []string{"unit 0 (ecs): pool a: cpu 4000m used + 500m asked > 4000m, waiting below max (ExceedMax)"}},
		{name: "ExceedMax moves past a full unit", placed: in(0, 10, "r"),
			policy: func(p *ack.ResourcePolicySpec) { p.WhenTryNextUnits.Policy = ack.ExceedMax }, want: "1/b"},
		{name: "ExceedMax moves past a unit without max", cap: gpu0Full, req: UnitRequest{Request: Request{GPUMemGiB: 3}},
			policy: func(p *ack.ResourcePolicySpec) {
				p.WhenTryNextUnits.Policy = ack.ExceedMax
				p.Units[0].Max = nil
			}, want: "1/b", gpu: []string{"1:3 GiB"}},
		{name: "TimeoutOrExceedMax waits until the timeout", cap: cpuFull, req: UnitRequest{CPUMilli: 500}, pending: 20 * time.Second,
			policy: func(p *ack.ResourcePolicySpec) {
				p.WhenTryNextUnits = ack.TryNextUnitsOptions{Policy: ack.TimeoutOrExceedMax, Timeout: &metav1.Duration{Duration: min1}}
			}, err: ErrNoUnit, waiting: 0, retryAt: 40 * time.Second, msg: []string{"(TimeoutOrExceedMax, timeout 1m0s)"}},
		{name: "TimeoutOrExceedMax moves on after it", cap: cpuFull, req: UnitRequest{CPUMilli: 500}, pending: time.Minute,
			policy: func(p *ack.ResourcePolicySpec) {
				p.WhenTryNextUnits = ack.TryNextUnitsOptions{Policy: ack.TimeoutOrExceedMax, Timeout: &metav1.Duration{Duration: min1}}
			}, want: "1/b"},
		{name: "TimeoutOrExceedMax defaults to 15 minutes", cap: cpuFull, req: UnitRequest{CPUMilli: 500}, pending: 14 * time.Minute,
			policy: func(p *ack.ResourcePolicySpec) { p.WhenTryNextUnits.Policy = ack.TimeoutOrExceedMax },
			err:    ErrNoUnit, waiting: 0, retryAt: time.Minute},
		{name: "the CRD's Timeout acts as TimeoutOrExceedMax", cap: cpuFull, req: UnitRequest{CPUMilli: 500},
			policy: func(p *ack.ResourcePolicySpec) { p.WhenTryNextUnits.Policy = ack.Timeout },
			err:    ErrNoUnit, waiting: 0, retryAt: 15 * time.Minute},
		{name: "TimeoutOrExceedMax does not wait in a unit without max", cap: cpuFull, req: UnitRequest{CPUMilli: 500},
			policy: func(p *ack.ResourcePolicySpec) {
				p.WhenTryNextUnits.Policy = ack.TimeoutOrExceedMax
				p.Units[0].Max = nil
			}, want: "1/b"},
		{name: "TimeoutOrExceedMax waits where the wait-for-scaling label says so", cap: cpuFull, req: UnitRequest{CPUMilli: 500},
			policy: func(p *ack.ResourcePolicySpec) {
				p.WhenTryNextUnits.Policy = ack.TimeoutOrExceedMax
				p.Units[0].Max = nil
				p.Units[0].PodLabels = map[string]string{WaitForECSScalingLabel: "true"}
			}, err: ErrNoUnit, waiting: 0, retryAt: 15 * time.Minute},
		{name: "LackResourceAndNoTerminating waits while replicas terminate", cap: cpuFull, req: UnitRequest{CPUMilli: 500},
			placed: terminating(in(0, 3, "r"), 1),
			policy: func(p *ack.ResourcePolicySpec) { p.WhenTryNextUnits.Policy = ack.LackResourceAndNoTerminating },
			err:    ErrNoUnit, waiting: 0, msg: []string{"waiting: 1 replicas terminating (LackResourceAndNoTerminating)"}},
		{name: "LackResourceAndNoTerminating: also at max", placed: terminating(in(0, 11, "r"), 1),
			policy: func(p *ack.ResourcePolicySpec) { p.WhenTryNextUnits.Policy = ack.LackResourceAndNoterminating },
			err:    ErrNoUnit, waiting: 0, msg: []string{"unit 0 (ecs): max 10 reached (10 replicas), waiting: 1 replicas terminating"}},
		{name: "LackResourceAndNoTerminating moves on when none terminate", cap: cpuFull, req: UnitRequest{CPUMilli: 500},
			placed: in(0, 3, "r"),
			policy: func(p *ack.ResourcePolicySpec) { p.WhenTryNextUnits.Policy = ack.LackResourceAndNoTerminating }, want: "1/b"},
		{name: "maxResources cpu", placed: in(0, 3, "r"), req: UnitRequest{CPUMilli: 300},
			policy: func(p *ack.ResourcePolicySpec) {
				p.Units[0].Max = nil
				p.Units[0].MaxResources = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}
			}, want: "1/b"},
		{name: "maxResources gpu-mem", placed: in(0, 1, "r"), req: UnitRequest{Request: Request{GPUMemGiB: 4}},
			policy: func(p *ack.ResourcePolicySpec) {
				p.Units[0].MaxResources = corev1.ResourceList{ResourceGPUMem: resource.MustParse("4")}
			}, want: "0/a", gpu: []string{"0:4 GiB"}},
		{name: "maxResources message", placed: in(0, 3, "r"), req: UnitRequest{CPUMilli: 300},
			policy: func(p *ack.ResourcePolicySpec) {
				p.Units = p.Units[:1]
				p.Units[0].MaxResources = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}
			}, err: ErrNoUnit, waiting: -1, msg: []string{"unit 0 (ecs): maxResources cpu reached (300m used + 300m asked > 500m)"}},
		{name: "no pool matches", policy: func(p *ack.ResourcePolicySpec) {
			p.Units = []ack.Unit{{Resource: ack.ResourceECS, NodeSelector: map[string]string{"key9": "v", "a": "b"}}}
		}, err: ErrNoUnit, waiting: -1, msg: []string{"unit 0 (ecs): no ecs pool matches nodeSelector a=b,key9=v"}},
		{name: "acs draws on eci pools", policy: func(p *ack.ResourcePolicySpec) { p.Units = []ack.Unit{{Resource: ack.ResourceACS}} }, want: "0/burst"},
		{name: "elastic draws on ecs pools", policy: func(p *ack.ResourcePolicySpec) {
			p.Units = []ack.Unit{{Resource: ack.ResourceElastic, NodeSelector: map[string]string{"zone": "x"}}}
		}, want: "0/b"},
		{name: "AfterAllUnits: the next unit before any hand-off", cap: func(c *Capacity) {
			gpu0Full(c)
			c.Candidates = []Candidate{idle("g", 0)}
		}, req: UnitRequest{Request: Request{GPUMemGiB: 3}}, want: "1/b", gpu: []string{"1:3 GiB"}},
		{name: "BeforeNextUnit: hand off in the unit first", cap: func(c *Capacity) {
			gpu0Full(c)
			c.Candidates = []Candidate{idle("g", 0)}
		}, policy: func(p *ack.ResourcePolicySpec) { p.PreemptPolicy = ack.PreemptBeforeNextUnit },
			req: UnitRequest{Request: Request{GPUMemGiB: 3}}, want: "0/a evict=g", gpu: []string{"0:3 GiB"}},
		{name: "AfterAllUnits: hand off in the first unit tried once none fits", cap: func(c *Capacity) {
			c.Reserved = []Reservation{share("g", 0, 80), share("h", 1, 80)}
			c.Candidates = []Candidate{idle("g", 5), idle("h", 1)}
		}, req: UnitRequest{Request: Request{GPUMemGiB: 3}}, want: "0/a evict=g", gpu: []string{"0:3 GiB"}},
		{name: "no hand-off where cpu is short", cap: func(c *Capacity) {
			cpuFull(c)
			c.Reserved = []Reservation{share("g", 0, 80), share("h", 1, 80)}
			c.Candidates = []Candidate{idle("g", 0), idle("h", 1)}
		}, req: UnitRequest{CPUMilli: 100, Request: Request{GPUMemGiB: 3}}, want: "1/b evict=h", gpu: []string{"1:3 GiB"}},
		{name: "invalid GPU request", req: UnitRequest{Request: Request{GPUMemGiB: 3, WholeGPUs: 1}}, err: ErrInvalidRequest},
		{name: "no units", policy: func(p *ack.ResourcePolicySpec) { p.Units = nil }, err: ErrNoUnit, waiting: -1, msg: []string{"the policy has no units"}},
	}
	now := t0.Add(time.Hour)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			policy := articlePolicy()
			if tt.policy != nil {
				tt.policy(&policy)
			}
			c := machine()
			if tt.cap != nil {
				tt.cap(&c)
			}
			req := tt.req
			if req.Replica == "" {
				req.Replica = "new"
			}
			req.Revision = "rev-new"
			ch, err := ChooseUnit(policy, c, tt.placed, req, now, now.Add(-tt.pending))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v (choice %+v), want %v", err, ch, tt.err)
				}
				for _, m := range tt.msg {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("error %q\nlacks %q", err, m)
					}
				}
				var u *Unschedulable
				if errors.As(err, &u) {
					if u.Waiting != tt.waiting {
						t.Errorf("waiting in %d, want %d", u.Waiting, tt.waiting)
					}
					var want time.Time
					if tt.retryAt != 0 {
						want = now.Add(tt.retryAt)
					}
					if !u.RetryAt.Equal(want) {
						t.Errorf("retry at %v, want %v", u.RetryAt, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("%d/%s", ch.Unit, ch.Pool)
			if len(ch.Evict) > 0 {
				got += " evict=" + strings.Join(ch.Evict, ",")
			}
			if got != tt.want {
				t.Errorf("chose %s, want %s", got, tt.want)
			}
			if g := on(ch.GPU); !slices.Equal(g, tt.gpu) {
				t.Errorf("GPU placement %v, want %v", g, tt.gpu)
			}
		})
	}
}

func TestChooseUnitLabels(t *testing.T) {
	policy := articlePolicy()
	policy.Units[0].PodLabels = map[string]string{"tier": "base", WaitForECSScalingLabel: "true"}
	policy.Units[0].PodAnnotations = map[string]string{"note": "x"}
	ch, err := ChooseUnit(policy, machine(), nil, UnitRequest{Request: Request{Replica: "r"}}, t0, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ch.Labels) != "map[tier:base]" || fmt.Sprint(ch.Annotations) != "map[note:x]" {
		t.Errorf("labels %v annotations %v", ch.Labels, ch.Annotations)
	}
	if _, ok := policy.Units[0].PodLabels[WaitForECSScalingLabel]; !ok {
		t.Error("ChooseUnit changed the policy's podLabels")
	}
}

// TestFillAndEmpty scales the article's policy out to 13 replicas and back: 10 on the
// first unit, then the second, then (its pool full) eci; scale-in goes back exactly.
func TestFillAndEmpty(t *testing.T) {
	policy := articlePolicy()
	c := machine()
	c.Pools[1].CPUMilli = 200
	c.Used = map[string]Usage{}
	var placed []UnitPlacement
	for i := range 13 {
		req := UnitRequest{Request: Request{Replica: fmt.Sprintf("r%02d", i), Revision: "rev-1"}, CPUMilli: 100}
		ch, err := ChooseUnit(policy, c, placed, req, t0, t0)
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		u := c.Used[ch.Pool]
		u.CPUMilli += req.CPUMilli
		c.Used[ch.Pool] = u
		placed = append(placed, UnitPlacement{Replica: req.Replica, Revision: req.Revision, Unit: ch.Unit, Pool: ch.Pool,
			Created: t0.Add(time.Duration(i) * time.Second), CPUMilli: req.CPUMilli})
	}
	var units []int
	for _, p := range placed {
		units = append(units, p.Unit)
	}
	if want := []int{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2}; !slices.Equal(units, want) {
		t.Errorf("units %v, want %v", units, want)
	}
	order := ScaleInOrder(placed)
	want := []string{"r12", "r11", "r10", "r09", "r08", "r07", "r06", "r05", "r04", "r03", "r02", "r01", "r00"}
	if !slices.Equal(order, want) {
		t.Errorf("scale-in order %v, want %v", order, want)
	}
}

func TestScaleInOrder(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	placed := []UnitPlacement{
		{Replica: "a0", Unit: 0, Created: at(1)},
		{Replica: "a1", Unit: 0, Created: at(5)},
		{Replica: "b0", Unit: 1, Created: at(2)},
		{Replica: "b1", Unit: 1, Created: at(2)},
		{Replica: "c0", Unit: 2, Created: at(0)},
		{Replica: "c1", Unit: 2, Created: at(9), Terminating: true},
		{Replica: "x", Unit: -1, Created: at(0)},
	}
	got := ScaleInOrder(placed)
	want := []string{"x", "c0", "b1", "b0", "a1", "a0"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := ScaleInOrder(nil); len(got) != 0 {
		t.Errorf("ScaleInOrder(nil) = %v", got)
	}
}
