package store

import (
	"errors"
	"strings"
	"testing"
)

func TestDefaultNamespace(t *testing.T) {
	seen := map[string]string{}
	for _, r := range [][2]string{
		{"a-b", "c"}, {"a", "b-c"}, {"a", "b.c"}, {"a", "b_c"}, {"Octo", "App"},
		{"octo", strings.Repeat("x", 100)}, {"o", "-x-"}, {"o", "..."},
	} {
		ns := DefaultNamespace(r[0], r[1])
		if !dnsLabel.MatchString(ns) || !strings.HasPrefix(ns, "kgd-") {
			t.Errorf("DefaultNamespace(%q, %q) = %q, not a DNS label starting kgd-", r[0], r[1], ns)
		}
		if other, dup := seen[ns]; dup {
			t.Errorf("%s/%s and %s share namespace %s", r[0], r[1], other, ns)
		}
		seen[ns] = r[0] + "/" + r[1]
	}
	if DefaultNamespace("Octo", "App") != DefaultNamespace("octo", "app") {
		t.Error("GitHub names are case-insensitive: the namespace must be too")
	}
	if got := DefaultNamespace("demo", "hello"); !strings.HasPrefix(got, "kgd-demo-hello-") || len(got) != len("kgd-demo-hello-")+8 {
		t.Errorf("DefaultNamespace(demo, hello) = %q, want kgd-demo-hello-<8 hex>", got)
	}
}

func TestPolicyValidate(t *testing.T) {
	ok := DefaultPolicy("octo", "app")
	if err := ok.Validate(); err != nil {
		t.Fatalf("DefaultPolicy: %v", err)
	}
	for name, p := range map[string]Policy{
		"no-namespace":    {},
		"bad-namespace":   {Namespaces: []string{"Kube_System"}},
		"duplicate":       {Namespaces: []string{"a", "a"}},
		"bad-kind":        {Namespaces: []string{"a"}, AllowKinds: []string{"role binding"}},
		"bad-sa":          {Namespaces: []string{"a"}, ServiceAccount: "deployer"},
		"bad-operator":    {Namespaces: []string{"a"}, Operators: []string{"not an email"}},
		"too-many-kinds":  {Namespaces: []string{"a"}, AllowKinds: make([]string, 101)},
		"empty-namespace": {Namespaces: []string{""}},
	} {
		if err := p.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", name, err)
		}
	}
	good := Policy{Namespaces: []string{"web", "web-canary"}, AllowKinds: []string{"NetworkPolicy", "rbac.authorization.k8s.io/RoleBinding"},
		ServiceAccount: "web/deployer", Operators: []string{"Alice@example.com"}}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v", good, err)
	}
	if !good.IsOperator("alice@EXAMPLE.com") || good.IsOperator("") || good.IsOperator("bob@example.com") {
		t.Error("IsOperator must match emails case-insensitively and nothing else")
	}
}
