package safego

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestNoBareGoStatements: every goroutine the product starts (cmd/,
// internal/, initramfs/) goes through safego, so a panic in it cannot end
// PID 1. Tests and e2e/ are not product code.
func TestNoBareGoStatements(t *testing.T) {
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "../..")
	fset := token.NewFileSet()
	n := 0
	for _, top := range []string{"cmd", "internal", "initramfs"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") ||
				strings.Contains(p, "/testdata/") || strings.HasSuffix(filepath.Dir(p), "internal/safego") {
				return err
			}
			f, err := parser.ParseFile(fset, p, nil, 0)
			if err != nil {
				return err
			}
			n++
			ast.Inspect(f, func(x ast.Node) bool {
				if g, ok := x.(*ast.GoStmt); ok {
					rel, _ := filepath.Rel(root, fset.Position(g.Pos()).Filename)
					t.Errorf("%s:%d: bare go statement; use safego.Go so a panic becomes the boot's fallback", rel, fset.Position(g.Pos()).Line)
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n < 50 {
		t.Fatalf("only %d product files parsed; is the tree where this test thinks?", n)
	}
}
