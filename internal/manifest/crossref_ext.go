package manifest

import (
	"fmt"
	"sort"
	"strings"

	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/ack"
	"github.com/infera-dev/infera/internal/fluid"
)

// runtimeKinds are Fluid's runtimes: a Dataset is bound to the runtime of its own name.
var runtimeKinds = []string{fluid.KindJindoRuntime, fluid.KindAlluxioRuntime, fluid.KindJuiceFSRuntime}

func (rc *refChecker) hasDataset(name string) bool {
	return rc.ix.get(fluid.Group, fluid.KindDataset, rc.doc.Namespace, name) != nil
}

func (rc *refChecker) hasRuntime(name string) bool {
	for _, k := range runtimeKinds {
		if rc.ix.get(fluid.Group, k, rc.doc.Namespace, name) != nil {
			return true
		}
	}
	return false
}

// crossReferencesExt checks the references of the Fluid and Alibaba Cloud kinds.
func crossReferencesExt(rc *refChecker, obj any) {
	switch o := obj.(type) {
	case *fluid.Dataset:
		for _, r := range o.SecretRefs() {
			rc.secretKey(r.Name, r.Key, r.Path, false)
		}
		if !rc.hasRuntime(o.Name) {
			rc.add(apis.ErrGeneric(fmt.Sprintf("no runtime named %q in namespace %q: Fluid binds a Dataset to the JindoRuntime, AlluxioRuntime or JuiceFSRuntime of the same name, and infera caches it with a default tiered store until one is applied", o.Name, o.Namespace), "metadata.name").At(apis.WarningLevel))
		}
	case *fluid.JindoRuntime, *fluid.AlluxioRuntime, *fluid.JuiceFSRuntime:
		if !rc.hasDataset(rc.doc.Name) {
			rc.add(apis.ErrGeneric(fmt.Sprintf("no Dataset named %q in namespace %q: a runtime serves the Dataset of its own name", rc.doc.Name, rc.doc.Namespace), "metadata.name").At(apis.WarningLevel))
		}
	case *fluid.DataLoad:
		ns := o.Spec.Dataset.Namespace
		if ns == "" {
			ns = rc.doc.Namespace
		}
		if rc.ix.get(fluid.Group, fluid.KindDataset, ns, o.Spec.Dataset.Name) == nil {
			rc.add(apis.ErrGeneric(fmt.Sprintf("dataset %q not found in namespace %q", o.Spec.Dataset.Name, ns), "spec.dataset.name"))
		}
	case *ack.ResourcePolicy:
		if len(o.Spec.Selector) > 0 && !rc.selectsService(o.Spec.Selector) {
			rc.add(apis.ErrGeneric(fmt.Sprintf("selects no Service in namespace %q: the policy applies to nothing (a Service's pods carry serving.knative.dev/service=NAME and its template labels)", rc.doc.Namespace), "spec.selector").At(apis.WarningLevel))
		}
	}
}

// selectsService reports whether a label selector matches the pods of any Service in the
// namespace. Knative labels every pod with its service, configuration and revision names.
func (rc *refChecker) selectsService(sel map[string]string) bool {
	for _, d := range rc.ix {
		s, ok := d.Object.(*servingv1.Service)
		if !ok || d.Namespace != rc.doc.Namespace {
			continue
		}
		labels := map[string]string{
			"serving.knative.dev/service":       s.Name,
			"serving.knative.dev/configuration": s.Name,
		}
		for k, v := range s.Spec.Template.Labels {
			labels[k] = v
		}
		match := true
		for k, v := range sel {
			if labels[k] != v {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// extKinds registers the Fluid and Alibaba Cloud kinds.
func extKinds() []kindInfo {
	var out []kindInfo
	for _, k := range fluid.Kinds() {
		out = append(out, kindInfo{fluid.Group, fluid.Version, k, func() any { o, _ := fluid.New(k); return o }, validateSelf, false})
	}
	for _, k := range ack.Kinds() {
		av, _ := ack.APIVersionOf(k)
		group, version, _ := strings.Cut(av, "/")
		out = append(out, kindInfo{group, version, k, func() any { o, _ := ack.New(k); return o }, validateSelf, k == ack.KindImageCache})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].kind < out[j].kind })
	return out
}
