package controller

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/infera-dev/infera/internal/ack"
	"github.com/infera-dev/infera/internal/placement"
	"github.com/infera-dev/infera/internal/workload"
)

// The ConfigMap that declares this machine's capacity pools for ResourcePolicy units.
const (
	PoolsNamespace = "infera-system"
	PoolsConfigMap = "pools"
)

// poolSpec is one entry of the pools ConfigMap: data[name] is this, as YAML.
type poolSpec struct {
	Kind   string            `json:"kind"` // ecs (a pool you own) or eci (the elastic pool for bursts)
	Labels map[string]string `json:"labels"`
	GPUs   []int             `json:"gpus"`   // GPU indices; none: no GPUs
	CPU    string            `json:"cpu"`    // a Kubernetes quantity; empty: unbounded
	Memory string            `json:"memory"` // a Kubernetes quantity; empty: unbounded
}

// parsePools reads the pools ConfigMap's data, pools in name order; a broken entry is an
// error naming it.
func parsePools(data map[string]string) ([]placement.Pool, error) {
	var out []placement.Pool
	for _, name := range slices.Sorted(maps.Keys(data)) {
		var ps poolSpec
		if err := yaml.UnmarshalStrict([]byte(data[name]), &ps); err != nil {
			return nil, fmt.Errorf("pool %q: %w", name, err)
		}
		p := placement.Pool{Name: name, Labels: ps.Labels, Kind: strings.ToLower(ps.Kind), GPUs: ps.GPUs}
		switch p.Kind {
		case "":
			p.Kind = placement.KindECS
		case placement.KindECS, placement.KindECI:
		default:
			return nil, fmt.Errorf("pool %q: kind %q: want ecs or eci", name, ps.Kind)
		}
		if ps.CPU != "" {
			q, err := resource.ParseQuantity(ps.CPU)
			if err != nil {
				return nil, fmt.Errorf("pool %q: cpu: %w", name, err)
			}
			p.CPUMilli = q.MilliValue()
		}
		if ps.Memory != "" {
			q, err := resource.ParseQuantity(ps.Memory)
			if err != nil {
				return nil, fmt.Errorf("pool %q: memory: %w", name, err)
			}
			p.MemoryBytes = q.Value()
		}
		out = append(out, p)
	}
	return out, nil
}

// syncPolicies publishes the ResourcePolicies and the pools for UnitsFor.
func (c *Controller) syncPolicies() {
	list := make([]*ack.ResourcePolicy, 0, len(c.state.policies))
	for _, k := range slices.Sorted(maps.Keys(c.state.policies)) {
		list = append(list, c.state.policies[k])
	}
	var pools []placement.Pool
	set := false
	if cm := c.state.ConfigMap(PoolsNamespace, PoolsConfigMap); cm != nil {
		p, err := parsePools(cm.Data)
		if err != nil {
			c.log.Error("ConfigMap infera-system/pools not used", "err", err)
		} else {
			pools, set = p, true
		}
	}
	c.mu.Lock()
	c.policies, c.pools, c.poolsSet = list, pools, set
	c.mu.Unlock()
}

// UnitsFor is the ResourcePolicy whose selector matches a revision's labels (in its
// namespace; the first by name when several do, as ACK uses one), its key, and the pools its
// units fill. gpus is the machine's inventory: without the pools ConfigMap, one ecs pool
// named "local" holds the whole machine and matches every ecs unit's nodeSelector (the
// policy's ECS units are then counts within this machine, filled in order and emptied in
// reverse); an eci unit has a pool only when the ConfigMap declares one.
func (c *Controller) UnitsFor(rev workload.Revision, gpus []int) (*ack.ResourcePolicySpec, string, []placement.Pool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, p := range c.policies {
		if p.Namespace != rev.Namespace || !policySelects(p, rev.Labels) {
			continue
		}
		key := p.Namespace + "/" + p.Name
		if c.poolsSet {
			return &p.Spec, key, c.pools
		}
		local := placement.Pool{Name: "local", Kind: placement.KindECS, GPUs: gpus, Labels: map[string]string{}}
		for _, u := range p.Spec.Units {
			if u.Resource != ack.ResourceECI {
				maps.Copy(local.Labels, u.NodeSelector)
			}
		}
		return &p.Spec, key, []placement.Pool{local}
	}
	return nil, "", nil
}

// policySelects: the policy's selector (and matchExpressions) match the labels; an empty
// selector selects nothing, as in ACK.
func policySelects(p *ack.ResourcePolicy, lbls map[string]string) bool {
	if len(p.Spec.Selector) == 0 && len(p.Spec.LabelExpressions) == 0 {
		return false
	}
	if !labels.SelectorFromSet(p.Spec.Selector).Matches(labels.Set(lbls)) {
		return false
	}
	for _, e := range p.Spec.LabelExpressions {
		v, has := lbls[e.Key]
		switch e.Operator {
		case "In":
			if !has || !slices.Contains(e.Values, v) {
				return false
			}
		case "NotIn":
			if has && slices.Contains(e.Values, v) {
				return false
			}
		case "Exists":
			if !has {
				return false
			}
		case "DoesNotExist":
			if has {
				return false
			}
		}
	}
	return true
}
