package manifest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/template"

	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/apis"
	"knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	asconfig "knative.dev/serving/pkg/autoscaler/config"
)

// KnativeNamespace is where Knative's ConfigMaps live; infera reads them from the same place.
const KnativeNamespace = "knative-serving"

// Knative ConfigMap names infera reads.
const (
	ConfigDefaults      = "config-defaults"
	ConfigAutoscaler    = "config-autoscaler"
	ConfigFeatures      = "config-features"
	ConfigNetwork       = "config-network"
	ConfigDomain        = "config-domain"
	ConfigObservability = "config-observability"
)

// DefaultFeatures are infera's departures from Knative's config-features defaults. Knative
// disables PersistentVolumeClaim volumes unless a cluster enables them; ACK enables them and the
// practice infera implements mounts a Fluid Dataset's claim, so infera enables both. A
// config-features ConfigMap in the input still decides.
var defaultFeatures = map[string]string{
	"kubernetes.podspec-persistent-volume-claim": "enabled",
	"kubernetes.podspec-persistent-volume-write": "enabled",
}

// KnativeConfig is the parsed Knative configuration a set of manifests is validated under.
type KnativeConfig struct {
	Config *config.Config
	// Observability is config-observability as Knative's queue-proxy reads it (request log).
	Observability *Observability
	// Maps keeps the raw data of every Knative ConfigMap seen, by name.
	Maps map[string]map[string]string
}

// knativeConfig parses the knative-serving ConfigMaps of a set (input over applied). Problems
// in a ConfigMap are returned keyed by ConfigMap name.
func knativeConfig(cms map[string]*corev1.ConfigMap) (*KnativeConfig, map[string]*apis.FieldError) {
	errs := map[string]*apis.FieldError{}
	kc := &KnativeConfig{Config: &config.Config{}, Maps: map[string]map[string]string{}}
	for name, cm := range cms {
		kc.Maps[name] = cm.Data
	}

	features := map[string]string{}
	for k, v := range defaultFeatures {
		features[k] = v
	}
	for k, v := range kc.Maps[ConfigFeatures] {
		features[k] = v
	}
	var err error
	if kc.Config.Features, err = config.NewFeaturesConfigFromMap(features); err != nil {
		errs[ConfigFeatures] = apis.ErrGeneric(err.Error(), "data")
		kc.Config.Features, _ = config.NewFeaturesConfigFromMap(defaultFeatures)
	}
	if kc.Config.Defaults, err = config.NewDefaultsConfigFromMap(orEmpty(kc.Maps[ConfigDefaults])); err != nil {
		errs[ConfigDefaults] = apis.ErrGeneric(err.Error(), "data")
		kc.Config.Defaults, _ = config.NewDefaultsConfigFromMap(map[string]string{})
	}
	if kc.Config.Autoscaler, err = asconfig.NewConfigFromMap(orEmpty(kc.Maps[ConfigAutoscaler])); err != nil {
		errs[ConfigAutoscaler] = apis.ErrGeneric(err.Error(), "data")
		kc.Config.Autoscaler, _ = asconfig.NewConfigFromMap(map[string]string{})
	}
	var ofe *apis.FieldError
	kc.Observability, ofe = validateObservability(kc.Maps[ConfigObservability])
	if ofe != nil {
		errs[ConfigObservability] = ofe
	}
	return kc, errs
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// Observability is the part of config-observability infera uses: Knative's request log.
type Observability struct {
	EnableRequestLog      bool
	EnableProbeRequestLog bool
	RequestLogTemplate    string
}

// DefaultRequestLogTemplate is Knative's default (knative.dev/serving/pkg/observability).
const DefaultRequestLogTemplate = `{"httpRequest": {"requestMethod": "{{.Request.Method}}", "requestUrl": "{{js .Request.RequestURI}}", "requestSize": "{{.Request.ContentLength}}", "status": {{.Response.Code}}, "responseSize": "{{.Response.Size}}", "userAgent": "{{js .Request.UserAgent}}", "remoteIp": "{{js .Request.RemoteAddr}}", "serverIp": "{{.Revision.PodIP}}", "referer": "{{js .Request.Referer}}", "latency": "{{.Response.Latency}}s", "protocol": "{{.Request.Proto}}"}, "traceId": "{{.TraceID}}"}`

// validateObservability reads config-observability's request-log keys with the rules of
// Knative's observability.NewFromMap (booleans as strconv.ParseBool, the template must parse,
// logging on needs a template). That package is not imported: it drags in every OpenTelemetry
// exporter. One repair is made, with a warning: `\"` inside a template action. The reference
// article writes its template in single-quoted YAML with `\"X-B3-Traceid\"`, which YAML keeps as a
// literal backslash and Go templates refuse; Knative rejects that ConfigMap, infera reads the
// quotes as meant.
func validateObservability(data map[string]string) (*Observability, *apis.FieldError) {
	o := &Observability{RequestLogTemplate: DefaultRequestLogTemplate}
	var fe *apis.FieldError
	for key, dst := range map[string]*bool{
		"logging.enable-request-log":       &o.EnableRequestLog,
		"logging.enable-probe-request-log": &o.EnableProbeRequestLog,
	} {
		if v, ok := data[key]; ok {
			b, err := strconv.ParseBool(v)
			if err != nil {
				fe = fe.Also(apis.ErrInvalidValue(v, "data["+key+"]", "must be true or false"))
			}
			*dst = b
		}
	}
	const tkey = "logging.request-log-template"
	if t, ok := data[tkey]; ok {
		o.RequestLogTemplate = t
		if fixed, changed := RepairRequestLogTemplate(t); changed {
			o.RequestLogTemplate = fixed
			fe = fe.Also(apis.ErrGeneric(`Knative's queue-proxy rejects this template: \" inside {{ }} is a literal backslash in single-quoted YAML; infera reads it as " (write the quotes without backslashes for Knative)`,
				"data["+tkey+"]").At(apis.WarningLevel))
		} else if _, err := template.New("request-log").Parse(t); err != nil {
			fe = fe.Also(apis.ErrGeneric(fmt.Sprintf("invalid request log template: %v", err), "data["+tkey+"]"))
		}
	}
	if o.EnableRequestLog && o.RequestLogTemplate == "" {
		fe = fe.Also(apis.ErrGeneric(`"logging.enable-request-log" is true but "logging.request-log-template" is empty`, "data["+tkey+"]"))
	}
	return o, fe
}

// RepairRequestLogTemplate replaces \" with " inside {{ }} actions when that turns a template Go
// cannot parse into one it can. changed reports whether it did.
func RepairRequestLogTemplate(t string) (string, bool) {
	if _, err := template.New("").Parse(t); err == nil || !strings.Contains(t, `\"`) {
		return t, false
	}
	var b strings.Builder
	for rest := t; ; {
		open := strings.Index(rest, "{{")
		if open < 0 {
			b.WriteString(rest)
			break
		}
		end := strings.Index(rest[open:], "}}")
		if end < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:open])
		b.WriteString(strings.ReplaceAll(rest[open:open+end], `\"`, `"`))
		rest = rest[open+end:]
		b.WriteString("}}")
		rest = rest[2:]
	}
	fixed := b.String()
	if _, err := template.New("").Parse(fixed); err != nil {
		return t, false
	}
	return fixed, true
}

// WithKnative attaches the configuration to ctx the way Knative's webhook does, so SetDefaults
// and Validate see it.
func (kc *KnativeConfig) WithKnative(ctx context.Context) context.Context {
	return config.ToContext(ctx, kc.Config)
}

func validateService(ctx context.Context, obj any) *apis.FieldError {
	s := obj.(*servingv1.Service)
	s.SetDefaults(ctx)
	return s.Validate(ctx)
}

// DefaultDomain is infera's domain when config-domain names none, so that
// http://NAME.default.localhost:8080 resolves to loopback in curl and browsers.
const DefaultDomain = "localhost"

// Domain is the domain services are served under: the config-domain key whose selector is
// empty (Knative's default domain), else DefaultDomain.
func (kc *KnativeConfig) Domain() string {
	if kc == nil {
		return DefaultDomain
	}
	best := ""
	for domain, selector := range kc.Maps[ConfigDomain] {
		if strings.TrimSpace(selector) == "" && (best == "" || domain < best) {
			best = domain
		}
	}
	if best == "" {
		return DefaultDomain
	}
	return best
}

// KnativeOf is the Knative configuration in effect for a set of applied documents (problems in
// their ConfigMaps were reported when they were applied).
func KnativeOf(applied []*Document) *KnativeConfig {
	kc, _ := knativeConfig(knativeConfigMaps(applied, nil))
	return kc
}
