// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"os"
	"testing"

	"github.com/nstrace/nstrace/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	// The image the DaemonSet's tests share, built once.
	testutil.RemoveNstraceImage()
	os.Exit(code)
}
