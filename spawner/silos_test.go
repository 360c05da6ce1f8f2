package spawner_test

import (
	"github.com/silo-proxy/silo-proxy/proxy"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// *spawner.Manager is what the proxy runs on: it must implement exactly
// the proxy's view of the silo lifecycle.
var _ proxy.Silos = (*spawner.Manager)(nil)
