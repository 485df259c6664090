// Package reconciler turns Knative Services into what runs: a Configuration per Service, an
// immutable Revision each time the Service's template changes (NAME-00001, NAME-00002, ...), and
// a Route from the Service's traffic block. It is a pure computation over a snapshot, Nomad's
// reconciler style: Compute(Input) returns the objects to persist and the routes to serve;
// the caller (infera up) does the I/O.
//
// Semantics follow Knative's controllers:
//   - a Configuration's generation increases when the Service's template changes, and the new
//     Revision is named {service}-{generation:05d} unless the template names it;
//   - traffic `latestRevision: true` follows the latest READY revision, so a rollout keeps
//     serving the old revision until the new one has passed readiness once;
//   - old revisions stay (scaled to zero unless routed) for splits and rollback.
//
// One departure, because infera holds requests instead of failing them: before any revision of
// a Service has ever been ready, `latestRevision` targets the latest created one, so the first
// request waits for it to start rather than getting a 503.
package reconciler

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	netv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	"knative.dev/pkg/kmeta"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/workload"
)

// Observed is what the controller knows of a revision's replicas.
type Observed struct {
	Ready int // replicas passing readiness now
	// Pending: the revision waits for something named (a Secret not applied yet, a dataset
	// being fetched, ...) and starts by itself once it is there.
	Pending bool
	// Failed: replicas cannot start, crash-loop before ever being ready, or the revision cannot
	// run until a user changes something.
	Failed  bool
	Reason  string // Knative-style CamelCase reason, when Pending or Failed (default: ExitCode)
	Message string // why, when Pending or Failed
	// ImageDigest is the image the revision's replicas run, pinned ("repo@sha256:..."), once
	// one ran: it goes into status.containerStatuses[].imageDigest, as Knative's tag
	// resolution records it.
	ImageDigest string
}

// Input is a snapshot of everything the reconciler decides from.
type Input struct {
	Services       []*servingv1.Service
	Configurations []*servingv1.Configuration
	Revisions      []*servingv1.Revision
	Observed       map[workload.RevisionID]Observed
	Domain         string
}

// Output is what should be true.
type Output struct {
	// Configurations and Revisions are every object that should exist, with status.
	// New and changed ones must be persisted; those in Input but missing here deleted.
	Configurations []*servingv1.Configuration
	Revisions      []*servingv1.Revision
	// Services carries each input Service with its computed status (status is not persisted).
	Services []*servingv1.Service
	// Routes are the routes to serve, one per Service with at least one target.
	Routes []workload.Route
	// Active is the set of revisions that should run replicas: routed ones and the latest
	// created revision of each Service (which must start to become ready).
	Active map[workload.RevisionID]bool
}

// Label keys Knative puts on revisions.
const (
	labelService       = serving.ServiceLabelKey
	labelConfiguration = serving.ConfigurationLabelKey
	labelConfigGen     = serving.ConfigurationGenerationLabelKey
	// ModelsAnnotation lists extra OpenAI model names a Service answers to, comma-separated.
	ModelsAnnotation = "infera.dev/models"
)

func key(ns, name string) string { return ns + "/" + name }

// Compute reconciles every Service of the input.
func Compute(in Input) Output {
	out := Output{Active: map[workload.RevisionID]bool{}}
	configs := map[string]*servingv1.Configuration{}
	for _, c := range in.Configurations {
		configs[key(c.Namespace, c.Name)] = c.DeepCopy()
	}
	revsByConfig := map[string][]*servingv1.Revision{}
	for _, r := range in.Revisions {
		cfg := r.Labels[labelConfiguration]
		revsByConfig[key(r.Namespace, cfg)] = append(revsByConfig[key(r.Namespace, cfg)], r.DeepCopy())
	}
	services := append([]*servingv1.Service(nil), in.Services...)
	sort.Slice(services, func(i, j int) bool {
		return key(services[i].Namespace, services[i].Name) < key(services[j].Namespace, services[j].Name)
	})
	for _, svc := range services {
		k := key(svc.Namespace, svc.Name)
		s := svc.DeepCopy()
		before := slices.Clone(s.Status.Conditions) // the status the caller last saw, if it kept it
		cfg, revs := reconcileConfiguration(s, configs[k], revsByConfig[k], in.Observed)
		route := reconcileRoute(s, cfg, revs, in.Domain)
		keepTransitionTimes(before, &s.Status)
		out.Configurations = append(out.Configurations, cfg)
		out.Revisions = append(out.Revisions, revs...)
		out.Services = append(out.Services, s)
		if len(route.Targets) > 0 {
			out.Routes = append(out.Routes, route)
		}
		for _, t := range route.Targets {
			out.Active[t.Revision] = true
		}
		if n := cfg.Status.LatestCreatedRevisionName; n != "" {
			out.Active[workload.NewRevisionID(s.Namespace, n)] = true
		}
	}
	return out
}

// reconcileConfiguration makes the Service's Configuration match its template, creating a
// Revision when the template changed, and computes revision and configuration status.
func reconcileConfiguration(svc *servingv1.Service, cfg *servingv1.Configuration, revs []*servingv1.Revision, observed map[workload.RevisionID]Observed) (*servingv1.Configuration, []*servingv1.Revision) {
	if cfg == nil {
		cfg = &servingv1.Configuration{
			TypeMeta: metav1.TypeMeta{APIVersion: servingv1.SchemeGroupVersion.String(), Kind: "Configuration"},
			ObjectMeta: metav1.ObjectMeta{
				Name: svc.Name, Namespace: svc.Namespace,
				Labels:          map[string]string{labelService: svc.Name},
				OwnerReferences: []metav1.OwnerReference{*kmeta.NewControllerRef(svc)},
			},
		}
	}
	defer keepTransitionTimes(slices.Clone(cfg.Status.Conditions), &cfg.Status)
	cfg.Status.InitializeConditions()
	if !equality.Semantic.DeepEqual(cfg.Spec, svc.Spec.ConfigurationSpec) || len(revs) == 0 {
		name := svc.Spec.Template.Name
		cfg.Generation++
		if name == "" {
			name = kmeta.ChildName(cfg.Name, fmt.Sprintf("-%05d", cfg.Generation))
		}
		if existing := find(revs, name); existing != nil {
			if !equality.Semantic.DeepEqual(existing.Spec, svc.Spec.Template.Spec) {
				cfg.Generation--
				svc.Status.MarkRevisionNameTaken(name)
				cfg.Status.MarkRevisionCreationFailed(fmt.Sprintf("revision %q already exists with another spec: change the template's name with its spec", name))
				return cfg, sortRevisions(revs)
			}
		} else {
			revs = append(revs, newRevision(svc, cfg, name))
		}
		cfg.Spec = *svc.Spec.ConfigurationSpec.DeepCopy()
		cfg.Status.SetLatestCreatedRevisionName(name)
	}
	cfg.Status.ObservedGeneration = cfg.Generation
	revs = sortRevisions(revs)

	var latestReady *servingv1.Revision
	for _, r := range revs {
		markRevision(r, observed[workload.NewRevisionID(r.Namespace, r.Name)])
		if r.IsReady() && (latestReady == nil || revGeneration(r) > revGeneration(latestReady)) {
			latestReady = r
		}
	}
	if latestReady != nil {
		cfg.Status.SetLatestReadyRevisionName(latestReady.Name)
	}
	if latest := find(revs, cfg.Status.LatestCreatedRevisionName); latest != nil && latest.IsFailed() {
		cfg.Status.MarkLatestCreatedFailed(latest.Name, latest.Status.GetCondition(servingv1.RevisionConditionReady).Message)
	}
	svc.Status.PropagateConfigurationStatus(&cfg.Status)
	return cfg, revs
}

func newRevision(svc *servingv1.Service, cfg *servingv1.Configuration, name string) *servingv1.Revision {
	t := svc.Spec.Template
	labels := map[string]string{}
	for k, v := range t.Labels {
		labels[k] = v
	}
	labels[labelService] = svc.Name
	labels[labelConfiguration] = cfg.Name
	labels[labelConfigGen] = fmt.Sprint(cfg.Generation)
	annotations := map[string]string{}
	for k, v := range t.Annotations {
		annotations[k] = v
	}
	return &servingv1.Revision{
		TypeMeta: metav1.TypeMeta{APIVersion: servingv1.SchemeGroupVersion.String(), Kind: "Revision"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: svc.Namespace, Labels: labels, Annotations: annotations,
			Generation:      1,
			OwnerReferences: []metav1.OwnerReference{*kmeta.NewControllerRef(cfg)},
		},
		Spec: *t.Spec.DeepCopy(),
	}
}

// markRevision sets a revision's conditions from what its replicas do. Ready, once reached, stays
// (a revision scaled to zero is still ready, as in Knative); it turns False only when its
// replicas fail before it was ever ready.
func markRevision(r *servingv1.Revision, o Observed) {
	wasReady := r.IsReady()
	defer keepTransitionTimes(slices.Clone(r.Status.Conditions), &r.Status)
	r.Status.InitializeConditions()
	r.Status.ObservedGeneration = r.Generation
	switch {
	case o.Ready > 0:
		r.Status.MarkResourcesAvailableTrue()
		r.Status.MarkContainerHealthyTrue()
		r.Status.MarkActiveTrue()
	case wasReady:
		r.Status.MarkResourcesAvailableTrue()
		r.Status.MarkContainerHealthyTrue()
		r.Status.MarkActiveFalse("NoTraffic", "The target is not receiving traffic.")
	case o.Failed:
		reason := o.Reason
		if reason == "" {
			reason = "ExitCode"
		}
		r.Status.MarkContainerHealthyFalse(reason, o.Message)
		r.Status.MarkResourcesAvailableFalse(reason, o.Message)
	case o.Pending:
		r.Status.MarkResourcesAvailableUnknown(o.Reason, o.Message)
		r.Status.MarkActiveUnknown(o.Reason, o.Message)
	default: // starting, or started again after it was Pending or Failed
		r.Status.MarkResourcesAvailableUnknown("Deploying", "")
		r.Status.MarkContainerHealthyUnknown("Deploying", "")
		r.Status.MarkActiveUnknown("Deploying", "")
	}
	if r.Status.ContainerStatuses == nil {
		for _, c := range r.Spec.Containers {
			r.Status.ContainerStatuses = append(r.Status.ContainerStatuses, servingv1.ContainerStatus{Name: c.Name, ImageDigest: c.Image})
		}
	}
	if o.ImageDigest != "" && len(r.Status.ContainerStatuses) > 0 {
		r.Status.ContainerStatuses[0].ImageDigest = o.ImageDigest
	}
}

// reconcileRoute resolves the Service's traffic block to revisions.
func reconcileRoute(svc *servingv1.Service, cfg *servingv1.Configuration, revs []*servingv1.Revision, domain string) workload.Route {
	route := workload.Route{
		Namespace: svc.Namespace, Service: svc.Name,
		Host:   workload.ServiceHost(svc.Name, svc.Namespace, domain),
		Models: models(svc),
	}
	var rs servingv1.RouteStatus
	rs.InitializeConditions()
	traffic := svc.Spec.Traffic
	if len(traffic) == 0 {
		traffic = []servingv1.TrafficTarget{{LatestRevision: ptr(true), Percent: ptr(int64(100))}}
	}
	latest := cfg.Status.LatestReadyRevisionName
	if latest == "" {
		latest = cfg.Status.LatestCreatedRevisionName // hold requests while the first revision starts
	}
	ok := true
	for _, t := range traffic {
		name := t.RevisionName
		if t.LatestRevision != nil && *t.LatestRevision {
			name = latest
		}
		r := find(revs, name)
		switch {
		case name == "" || r == nil:
			rs.MarkMissingTrafficTarget("Revision", name)
			ok = false
			continue
		case r.IsFailed() && !(t.LatestRevision != nil && *t.LatestRevision):
			rs.MarkRevisionFailed(name)
			ok = false
		}
		percent := 0
		if t.Percent != nil {
			percent = int(*t.Percent)
		}
		route.Targets = append(route.Targets, workload.Target{Revision: workload.NewRevisionID(svc.Namespace, name), Percent: percent, Tag: t.Tag})
		st := servingv1.TrafficTarget{Tag: t.Tag, RevisionName: name, LatestRevision: t.LatestRevision, Percent: t.Percent}
		if t.Tag != "" {
			st.URL = &apis.URL{Scheme: "http", Host: workload.TagHost(t.Tag, svc.Name, svc.Namespace, domain)}
		}
		rs.Traffic = append(rs.Traffic, st)
	}
	// infera's gateway is the ingress: it is configured as soon as the route is computed.
	var ing netv1alpha1.IngressStatus
	ing.InitializeConditions()
	ing.MarkNetworkConfigured()
	ing.MarkLoadBalancerReady(nil, nil)
	rs.PropagateIngressStatus(ing)
	rs.MarkTLSNotEnabled("infera serves plain HTTP")
	if ok {
		rs.MarkTrafficAssigned()
		if cfg.Status.LatestReadyRevisionName == "" {
			rs.MarkConfigurationNotReady(cfg.Name)
		}
	}
	rs.URL = &apis.URL{Scheme: "http", Host: route.Host}
	rs.ObservedGeneration = svc.Generation
	svc.Status.PropagateRouteStatus(&rs)
	svc.Status.ObservedGeneration = svc.Generation
	return route
}

func models(svc *servingv1.Service) []string {
	out := []string{svc.Name}
	for _, m := range splitList(svc.Annotations[ModelsAnnotation]) {
		out = append(out, m)
	}
	for _, m := range splitList(svc.Spec.Template.Annotations[ModelsAnnotation]) {
		out = append(out, m)
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func find(revs []*servingv1.Revision, name string) *servingv1.Revision {
	for _, r := range revs {
		if r.Name == name {
			return r
		}
	}
	return nil
}

func revGeneration(r *servingv1.Revision) int64 {
	var g int64
	fmt.Sscan(r.Labels[labelConfigGen], &g)
	return g
}

func sortRevisions(revs []*servingv1.Revision) []*servingv1.Revision {
	sort.SliceStable(revs, func(i, j int) bool { return revGeneration(revs[i]) < revGeneration(revs[j]) })
	return revs
}

func ptr[T any](v T) *T { return &v }

// keepTransitionTimes restores the lastTransitionTime of every condition that ends a reconcile
// as it began it. Knative's condition manager stamps Ready anew each time a dependent condition
// passes through it, even when Ready ends where it started; keeping the old time keeps an
// unchanged status byte-identical, so the store is not rewritten on every pass.
func keepTransitionTimes(before duckv1.Conditions, status interface {
	GetConditions() apis.Conditions
	SetConditions(apis.Conditions)
}) {
	after := status.GetConditions()
	for i, c := range after {
		for _, old := range before {
			if old.Type == c.Type && old.Status == c.Status && old.Reason == c.Reason &&
				old.Message == c.Message && old.Severity == c.Severity {
				after[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	status.SetConditions(after)
}
