package main

import (
	_ "github.com/spf13/cobra"
	_ "go.etcd.io/bbolt"
	_ "go.yaml.in/yaml/v3"
	_ "k8s.io/api/core/v1"
	_ "knative.dev/pkg/apis"
	_ "knative.dev/serving/pkg/apis/serving/v1"
	_ "knative.dev/serving/pkg/autoscaler/scaling"
	_ "knative.dev/serving/pkg/autoscaler/aggregation"
	_ "github.com/robfig/cron/v3"
	_ "golang.org/x/sync/errgroup"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/common/expfmt"
)

func main() {}
