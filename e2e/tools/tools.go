//go:build tools

// Package tools pins the real control-plane binaries the e2e tests start
// (etcd, kube-apiserver) and helm, which renders and lints the chart.
// `make e2e-tools` builds them from this module into ./bin.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "helm.sh/helm/v3/cmd/helm"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
