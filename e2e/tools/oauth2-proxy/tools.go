//go:build tools

// Package tools pins oauth2-proxy, the external-auth service the e2e test
// puts in front of Dex, as its docs show for ingress-nginx.
package tools

import _ "github.com/oauth2-proxy/oauth2-proxy/v7"
