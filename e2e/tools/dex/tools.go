//go:build tools

// Package tools pins Dex, the OIDC provider the external-auth e2e test signs
// in with. Dex's module has no usable semver tags (v2 without /v2 in the
// path), so it is pinned by pseudo-version: this one is the v2.41.1 commit.
package tools

import _ "github.com/dexidp/dex/cmd/dex"
