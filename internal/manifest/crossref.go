package manifest

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// GPUMemResource is ACK's shared-GPU resource: GiB of GPU memory, a whole number.
const GPUMemResource corev1.ResourceName = "aliyun.com/gpu-mem"

// index finds objects by kind, namespace and name across the input and what is applied; the
// input wins, since it is what the set will make true.
type index map[string]*Document

func newIndex(input, applied []*Document) index {
	ix := index{}
	for _, docs := range [][]*Document{applied, input} {
		for _, d := range docs {
			// Documents that did not decode still exist for references to them; their own
			// errors are reported where they are.
			if prev := ix[d.key()]; prev == nil || d.Object != nil {
				ix[d.key()] = d
			}
		}
	}
	return ix
}

func (ix index) get(group, kind, namespace, name string) *Document {
	return ix[group+"/"+kind+"/"+namespace+"/"+name]
}

// refChecker accumulates the cross-reference findings of one document.
type refChecker struct {
	ix  index
	doc *Document
	fe  *apis.FieldError
}

// crossReferences checks every reference of the input documents: secrets, config maps and
// claims that Services use, the secrets behind Dataset credentials, and what ResourcePolicies
// select. References from applied objects were checked when they were applied.
func crossReferences(input, applied []*Document) Problems {
	ix := newIndex(input, applied)
	var out Problems
	for _, d := range input {
		if d.Object == nil {
			continue
		}
		rc := &refChecker{ix: ix, doc: d}
		switch o := d.Object.(type) {
		case *servingv1.Service:
			rc.podSpec(&o.Spec.Template.Spec.PodSpec, "spec.template.spec")
		default:
			crossReferencesExt(rc, o)
		}
		out = append(out, d.fieldProblems(rc.fe)...)
	}
	return out
}

func (rc *refChecker) add(fe *apis.FieldError) { rc.fe = rc.fe.Also(fe) }

// secretKey checks that a Secret exists in the document's namespace and, when key is not "",
// holds key.
func (rc *refChecker) secretKey(name, key, path string, optional bool) {
	if optional {
		return
	}
	d := rc.ix.get("", "Secret", rc.doc.Namespace, name)
	if d == nil {
		rc.add(apis.ErrGeneric(fmt.Sprintf("secret %q not found in namespace %q", name, rc.doc.Namespace), path))
		return
	}
	if d.Object == nil {
		return
	}
	if key != "" && !hasKey(d.Object.(*corev1.Secret), key) {
		rc.add(apis.ErrGeneric(fmt.Sprintf("secret %q has no key %q (it has: %s)", name, key, strings.Join(SecretKeys(d.Object.(*corev1.Secret)), ", ")), path))
	}
}

func (rc *refChecker) configMapKey(name, key, path string, optional bool) {
	if optional {
		return
	}
	d := rc.ix.get("", "ConfigMap", rc.doc.Namespace, name)
	if d == nil {
		rc.add(apis.ErrGeneric(fmt.Sprintf("configmap %q not found in namespace %q", name, rc.doc.Namespace), path))
		return
	}
	if d.Object == nil {
		return
	}
	cm := d.Object.(*corev1.ConfigMap)
	_, inData := cm.Data[key]
	_, inBinary := cm.BinaryData[key]
	if key != "" && !inData && !inBinary {
		rc.add(apis.ErrGeneric(fmt.Sprintf("configmap %q has no key %q", name, key), path))
	}
}

func (rc *refChecker) podSpec(ps *corev1.PodSpec, path string) {
	for i := range ps.Containers {
		rc.container(&ps.Containers[i], fmt.Sprintf("%s.containers[%d]", path, i))
	}
	for i := range ps.InitContainers {
		rc.container(&ps.InitContainers[i], fmt.Sprintf("%s.initContainers[%d]", path, i))
	}
	for i, v := range ps.Volumes {
		vp := fmt.Sprintf("%s.volumes[%d]", path, i)
		switch {
		case v.Secret != nil:
			opt := v.Secret.Optional != nil && *v.Secret.Optional
			rc.secretKey(v.Secret.SecretName, "", vp+".secret.secretName", opt)
			for j, item := range v.Secret.Items {
				rc.secretKey(v.Secret.SecretName, item.Key, fmt.Sprintf("%s.secret.items[%d].key", vp, j), opt)
			}
		case v.ConfigMap != nil:
			opt := v.ConfigMap.Optional != nil && *v.ConfigMap.Optional
			rc.configMapKey(v.ConfigMap.Name, "", vp+".configMap.name", opt)
			for j, item := range v.ConfigMap.Items {
				rc.configMapKey(v.ConfigMap.Name, item.Key, fmt.Sprintf("%s.configMap.items[%d].key", vp, j), opt)
			}
		case v.Projected != nil:
			for j, src := range v.Projected.Sources {
				sp := fmt.Sprintf("%s.projected.sources[%d]", vp, j)
				if s := src.Secret; s != nil {
					rc.secretKey(s.Name, "", sp+".secret.name", s.Optional != nil && *s.Optional)
				}
				if c := src.ConfigMap; c != nil {
					rc.configMapKey(c.Name, "", sp+".configMap.name", c.Optional != nil && *c.Optional)
				}
			}
		case v.PersistentVolumeClaim != nil:
			rc.claim(v.PersistentVolumeClaim.ClaimName, vp+".persistentVolumeClaim.claimName")
		}
	}
}

// claim checks that a claim exists: a PersistentVolumeClaim, or a Fluid Dataset, whose claim of
// the same name Fluid creates.
func (rc *refChecker) claim(name, path string) {
	if rc.ix.get("", "PersistentVolumeClaim", rc.doc.Namespace, name) != nil || rc.hasDataset(name) {
		return
	}
	rc.add(apis.ErrGeneric(fmt.Sprintf("claim %q not found in namespace %q: no Dataset (whose claim Fluid creates) or PersistentVolumeClaim of that name", name, rc.doc.Namespace), path))
}

func (rc *refChecker) container(c *corev1.Container, path string) {
	for i, e := range c.Env {
		if e.ValueFrom == nil {
			continue
		}
		ep := fmt.Sprintf("%s.env[%d].valueFrom", path, i)
		if r := e.ValueFrom.SecretKeyRef; r != nil {
			rc.secretKey(r.Name, r.Key, ep+".secretKeyRef", r.Optional != nil && *r.Optional)
		}
		if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
			rc.configMapKey(r.Name, r.Key, ep+".configMapKeyRef", r.Optional != nil && *r.Optional)
		}
	}
	for i, e := range c.EnvFrom {
		ep := fmt.Sprintf("%s.envFrom[%d]", path, i)
		if r := e.SecretRef; r != nil {
			rc.secretKey(r.Name, "", ep+".secretRef.name", r.Optional != nil && *r.Optional)
		}
		if r := e.ConfigMapRef; r != nil {
			rc.configMapKey(r.Name, "", ep+".configMapRef.name", r.Optional != nil && *r.Optional)
		}
	}
	for _, rl := range []struct {
		list corev1.ResourceList
		name string
	}{{c.Resources.Limits, "limits"}, {c.Resources.Requests, "requests"}} {
		if q, ok := rl.list[GPUMemResource]; ok {
			rc.add(gpuMem(q, fmt.Sprintf("%s.resources.%s[%s]", path, rl.name, GPUMemResource)))
		}
	}
}

// gpuMem checks an aliyun.com/gpu-mem quantity: ACK counts whole GiB.
func gpuMem(q resource.Quantity, path string) *apis.FieldError {
	if v, ok := q.AsInt64(); !ok || v <= 0 || q.Format == resource.BinarySI && q.String() != fmt.Sprint(v) {
		return apis.ErrInvalidValue(q.String(), path, "aliyun.com/gpu-mem is a whole number of GiB of GPU memory, greater than 0")
	}
	return nil
}
