package fluid_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/infera-dev/infera/internal/fluid"
)

func validDataLoad() *fluid.DataLoad {
	return &fluid.DataLoad{
		ObjectMeta: metav1.ObjectMeta{Name: "oss-data-warmup", Namespace: "default"},
		Spec: fluid.DataLoadSpec{
			Dataset: fluid.TargetDataset{Name: "oss-data", Namespace: "default"},
			Target:  []fluid.TargetPath{{Path: "/sd/v1-5", Replicas: 1}},
			Policy:  fluid.PolicyOnce,
		},
	}
}

func TestDataLoadValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(l *fluid.DataLoad)
		want   []string
	}{{
		name:   "valid",
		mutate: func(l *fluid.DataLoad) {},
	}, {
		name:   "whole dataset",
		mutate: func(l *fluid.DataLoad) { l.Spec.Target = nil },
	}, {
		name:   "missing dataset name",
		mutate: func(l *fluid.DataLoad) { l.Spec.Dataset.Name = "" },
		want:   []string{"Error spec.dataset.name: missing field(s)"},
	}, {
		name:   "dataset namespace unset",
		mutate: func(l *fluid.DataLoad) { l.Spec.Dataset.Namespace = "" },
		want:   []string{`Warning spec.dataset.namespace: not set: Fluid requires the DataLoad's namespace ("default") here`},
	}, {
		name:   "dataset in another namespace",
		mutate: func(l *fluid.DataLoad) { l.Spec.Dataset.Namespace = "models" },
		want:   []string{`Error spec.dataset.namespace: must be the DataLoad's namespace "default", got "models"`},
	}, {
		name:   "DataLoad namespace defaults to default",
		mutate: func(l *fluid.DataLoad) { l.Namespace = "" },
	}, {
		name:   "unknown policy",
		mutate: func(l *fluid.DataLoad) { l.Spec.Policy = "Always" },
		want:   []string{`Error spec.policy: invalid value "Always": expected one of Once, Cron, OnEvent`},
	}, {
		name:   "cron without schedule",
		mutate: func(l *fluid.DataLoad) { l.Spec.Policy = fluid.PolicyCron },
		want:   []string{"Error spec.schedule: required when policy is Cron"},
	}, {
		name:   "cron with a bad schedule",
		mutate: func(l *fluid.DataLoad) { l.Spec.Policy, l.Spec.Schedule = fluid.PolicyCron, "every hour" },
		want:   []string{`Error spec.schedule: invalid cron schedule "every hour": expected exactly 5 fields, found 2: [every hour]`},
	}, {
		name:   "cron with seconds",
		mutate: func(l *fluid.DataLoad) { l.Spec.Policy, l.Spec.Schedule = fluid.PolicyCron, "0 0 */6 * * *" },
		want:   []string{`Error spec.schedule: invalid cron schedule "0 0 */6 * * *": expected exactly 5 fields, found 6: [0 0 */6 * * *]`},
	}, {
		name:   "cron out of range",
		mutate: func(l *fluid.DataLoad) { l.Spec.Policy, l.Spec.Schedule = fluid.PolicyCron, "0 25 * * *" },
		want:   []string{`Error spec.schedule: invalid cron schedule "0 25 * * *": end of range (25) above maximum (23): 25`},
	}, {
		name:   "cron every six hours",
		mutate: func(l *fluid.DataLoad) { l.Spec.Policy, l.Spec.Schedule = fluid.PolicyCron, "0 */6 * * *" },
	}, {
		name:   "cron descriptor",
		mutate: func(l *fluid.DataLoad) { l.Spec.Policy, l.Spec.Schedule = fluid.PolicyCron, "@daily" },
	}, {
		name:   "schedule without cron",
		mutate: func(l *fluid.DataLoad) { l.Spec.Schedule = "@daily" },
		want:   []string{"Warning spec.schedule: ignored unless policy is Cron"},
	}, {
		name:   "on event",
		mutate: func(l *fluid.DataLoad) { l.Spec.Policy = fluid.PolicyOnEvent },
	}, {
		name: "target paths",
		mutate: func(l *fluid.DataLoad) {
			l.Spec.Target = []fluid.TargetPath{{Path: "sd/v1-5"}, {Replicas: 2}, {Path: "/sd", Replicas: -1}}
		},
		want: []string{
			`Error spec.target[0].path: path "sd/v1-5" must be absolute (a path inside the dataset)`,
			"Error spec.target[1].path: missing field(s)",
			"Error spec.target[2].replicas: must be >= 0, got -1",
		},
	}, {
		name:   "negative ttl",
		mutate: func(l *fluid.DataLoad) { l.Spec.TTLSecondsAfterFinished = ptr(int32(-5)) },
		want:   []string{"Error spec.ttlSecondsAfterFinished: must be >= 0, got -5"},
	}, {
		name:   "runAfter without kind and name",
		mutate: func(l *fluid.DataLoad) { l.Spec.RunAfter = &fluid.OperationRef{} },
		want:   []string{"Error spec.runAfter.kind: missing field(s)", "Error spec.runAfter.name: missing field(s)"},
	}, {
		name: "runAfter an unknown kind",
		mutate: func(l *fluid.DataLoad) {
			l.Spec.RunAfter = &fluid.OperationRef{ObjectRef: fluid.ObjectRef{Kind: "Job", Name: "prep"}}
			l.Spec.RunAfter.AffinityStrategy.Policy = "Prefer"
		},
		want: []string{`Error spec.runAfter.kind: invalid value "Job": expected one of DataLoad, DataBackup, DataMigrate, DataProcess`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := validDataLoad()
			tt.mutate(l)
			checkDiags(t, l.Validate(), tt.want)
		})
	}
}

func TestDataLoadSetDefaults(t *testing.T) {
	l := validDataLoad()
	l.Spec.Policy = ""
	l.SetDefaults()
	if l.Spec.Policy != fluid.PolicyOnce {
		t.Errorf("policy = %q, want Once", l.Spec.Policy)
	}
	l.Spec.Policy = fluid.PolicyCron
	l.SetDefaults()
	if l.Spec.Policy != fluid.PolicyCron {
		t.Errorf("SetDefaults overwrote policy Cron with %q", l.Spec.Policy)
	}
}
