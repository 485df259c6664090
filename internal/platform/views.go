package platform

import (
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/workload"
)

// ServiceView is a Service as `infera get services` and `describe` show it.
type ServiceView struct {
	Namespace     string          `json:"namespace"`
	Name          string          `json:"name"`
	URL           string          `json:"url"`
	Models        []string        `json:"models,omitempty"`
	Generation    int64           `json:"generation"`
	LatestCreated string          `json:"latestCreatedRevision,omitempty"`
	LatestReady   string          `json:"latestReadyRevision,omitempty"`
	Ready         string          `json:"ready"` // True, False, Unknown
	Reason        string          `json:"reason,omitempty"`
	Message       string          `json:"message,omitempty"`
	Traffic       []TrafficView   `json:"traffic,omitempty"`
	Conditions    []ConditionView `json:"conditions,omitempty"`
}

// TrafficView is one resolved traffic target.
type TrafficView struct {
	Revision       string `json:"revision"`
	Percent        int64  `json:"percent"`
	Tag            string `json:"tag,omitempty"`
	URL            string `json:"url,omitempty"`
	LatestRevision bool   `json:"latestRevision,omitempty"`
}

// ConditionView is a Knative status condition.
type ConditionView struct {
	Type    string    `json:"type"`
	Status  string    `json:"status"`
	Reason  string    `json:"reason,omitempty"`
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since,omitzero"`
}

// RevisionView is a Revision with what runs it and what the scaler decided.
type RevisionView struct {
	Namespace            string          `json:"namespace"`
	Name                 string          `json:"name"`
	Service              string          `json:"service"`
	Generation           string          `json:"configurationGeneration"`
	Image                string          `json:"image,omitempty"`
	ContainerConcurrency int64           `json:"containerConcurrency"`
	Routed               bool            `json:"routed"`
	Ready                string          `json:"ready"`
	Reason               string          `json:"reason,omitempty"`
	Message              string          `json:"message,omitempty"`
	ReadyReplicas        int             `json:"readyReplicas"`
	RunningReplicas      int             `json:"runningReplicas"`
	Decision             *Decision       `json:"decision,omitempty"`
	Conditions           []ConditionView `json:"conditions,omitempty"`
}

// Replica is one replica process as the supervisor reports it.
type Replica struct {
	Name      string    `json:"name"`
	Revision  string    `json:"revision"` // namespace/name
	PID       int       `json:"pid,omitempty"`
	Addr      string    `json:"addr,omitempty"`
	State     string    `json:"state"`
	Restarts  int       `json:"restarts"`
	Started   time.Time `json:"started,omitzero"`
	LastExit  string    `json:"lastExit,omitempty"`
	InFlight  int       `json:"inFlight"`
	Sandboxed bool      `json:"sandboxed"`
}

// ServiceDetail is `infera describe service`.
type ServiceDetail struct {
	Service   ServiceView    `json:"service"`
	Revisions []RevisionView `json:"revisions"`
	Replicas  []Replica      `json:"replicas"`
}

func conditions(cs []apis.Condition) []ConditionView {
	out := make([]ConditionView, 0, len(cs))
	for _, c := range cs {
		out = append(out, ConditionView{Type: string(c.Type), Status: string(c.Status), Reason: c.Reason, Message: c.Message, Since: c.LastTransitionTime.Inner.Time})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

func readyOf(c *apis.Condition) (status, reason, message string) {
	if c == nil {
		return string(corev1.ConditionUnknown), "", ""
	}
	return string(c.Status), c.Reason, c.Message
}

func serviceView(s *servingv1.Service, routes []workload.Route) ServiceView {
	v := ServiceView{
		Namespace: s.Namespace, Name: s.Name, Generation: s.Generation,
		LatestCreated: s.Status.LatestCreatedRevisionName, LatestReady: s.Status.LatestReadyRevisionName,
		Conditions: conditions(s.Status.Conditions),
	}
	if s.Status.URL != nil {
		v.URL = s.Status.URL.String()
	}
	v.Ready, v.Reason, v.Message = readyOf(s.Status.GetCondition(servingv1.ServiceConditionReady))
	for _, t := range s.Status.Traffic {
		tv := TrafficView{Revision: t.RevisionName, Tag: t.Tag, LatestRevision: t.LatestRevision != nil && *t.LatestRevision}
		if t.Percent != nil {
			tv.Percent = *t.Percent
		}
		if t.URL != nil {
			tv.URL = t.URL.String()
		}
		v.Traffic = append(v.Traffic, tv)
	}
	for _, r := range routes {
		if r.Namespace == s.Namespace && r.Service == s.Name {
			v.Models = r.Models
		}
	}
	return v
}
