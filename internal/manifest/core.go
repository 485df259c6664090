package manifest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"knative.dev/pkg/apis"
)

// HostPathAnnotation on a PersistentVolumeClaim names the local directory that backs it on this
// machine (until a Dataset's cache provides the claim).
const HostPathAnnotation = "infera.dev/host-path"

func validateObjectName(name string) *apis.FieldError {
	if name == "" {
		return apis.ErrMissingField("metadata.name")
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return apis.ErrInvalidValue(name, "metadata.name", strings.Join(msgs, "; "))
	}
	return nil
}

func validateKeys(keys []string, field string) *apis.FieldError {
	var fe *apis.FieldError
	for _, k := range keys {
		if msgs := validation.IsConfigMapKey(k); len(msgs) > 0 {
			fe = fe.Also(apis.ErrInvalidKeyName(k, field, strings.Join(msgs, "; ")))
		}
	}
	return fe
}

func validateSecret(_ context.Context, obj any) *apis.FieldError {
	s := obj.(*corev1.Secret)
	if s.Type == "" {
		s.Type = corev1.SecretTypeOpaque
	}
	fe := validateObjectName(s.Name)
	fe = fe.Also(validateKeys(slices.Sorted(maps.Keys(s.Data)), "data"), validateKeys(slices.Sorted(maps.Keys(s.StringData)), "stringData"))
	switch s.Type {
	case corev1.SecretTypeBasicAuth:
		if !hasKey(s, corev1.BasicAuthUsernameKey) && !hasKey(s, corev1.BasicAuthPasswordKey) {
			fe = fe.Also(apis.ErrGeneric(fmt.Sprintf("a %s secret needs %q or %q", s.Type, corev1.BasicAuthUsernameKey, corev1.BasicAuthPasswordKey), "data"))
		}
	case corev1.SecretTypeTLS:
		for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
			if !hasKey(s, k) {
				fe = fe.Also(apis.ErrMissingField("data[" + k + "]"))
			}
		}
	case corev1.SecretTypeDockerConfigJson:
		if !hasKey(s, corev1.DockerConfigJsonKey) {
			fe = fe.Also(apis.ErrMissingField("data[" + corev1.DockerConfigJsonKey + "]"))
		}
	}
	return fe
}

func hasKey(s *corev1.Secret, key string) bool {
	if _, ok := s.Data[key]; ok {
		return true
	}
	_, ok := s.StringData[key]
	return ok
}

// SecretKeys returns a Secret's keys, from data and stringData, sorted and each once: the keys
// it has once the API server has merged stringData into data.
func SecretKeys(s *corev1.Secret) []string {
	keys := slices.Collect(maps.Keys(s.Data))
	for k := range s.StringData {
		if _, dup := s.Data[k]; !dup {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func validateConfigMap(_ context.Context, obj any) *apis.FieldError {
	cm := obj.(*corev1.ConfigMap)
	fe := validateObjectName(cm.Name)
	fe = fe.Also(validateKeys(slices.Sorted(maps.Keys(cm.Data)), "data"), validateKeys(slices.Sorted(maps.Keys(cm.BinaryData)), "binaryData"))
	for k := range cm.Data {
		if _, dup := cm.BinaryData[k]; dup {
			fe = fe.Also(apis.ErrGeneric("key is in both data and binaryData", "data["+k+"]"))
		}
	}
	return fe
}

func validatePVC(_ context.Context, obj any) *apis.FieldError {
	pvc := obj.(*corev1.PersistentVolumeClaim)
	fe := validateObjectName(pvc.Name)
	if len(pvc.Spec.AccessModes) == 0 {
		fe = fe.Also(apis.ErrMissingField("spec.accessModes"))
	}
	for i, m := range pvc.Spec.AccessModes {
		switch m {
		case corev1.ReadWriteOnce, corev1.ReadOnlyMany, corev1.ReadWriteMany, corev1.ReadWriteOncePod:
		default:
			fe = fe.Also(apis.ErrInvalidValue(m, "", "must be one of ReadWriteOnce, ReadOnlyMany, ReadWriteMany, ReadWriteOncePod").ViaFieldIndex("spec.accessModes", i))
		}
	}
	if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; ok && q.Sign() <= 0 {
		fe = fe.Also(apis.ErrInvalidValue(q.String(), "spec.resources.requests[storage]", "must be greater than zero"))
	}
	if p, ok := pvc.Annotations[HostPathAnnotation]; ok && !strings.HasPrefix(p, "/") {
		fe = fe.Also(apis.ErrInvalidValue(p, "metadata.annotations["+HostPathAnnotation+"]", "must be an absolute path"))
	}
	return fe
}
