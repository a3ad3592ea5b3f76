package githubfake

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func getUser(t *testing.T, apiURL, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", apiURL+"user", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var u struct {
		Login string `json:"login"`
	}
	json.NewDecoder(resp.Body).Decode(&u)
	return resp.StatusCode, u.Login
}

func TestStartOnListener(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewUnstarted("id", "secret")
	s.Start(l)
	defer s.Close()
	if want := "http://" + l.Addr().String() + "/"; s.URL != want || s.APIURL != want+"api/v3/" {
		t.Errorf("URL, APIURL = %q, %q", s.URL, s.APIURL)
	}
	tok := s.AddUser("octo")
	if code, login := getUser(t, s.APIURL, tok); code != http.StatusOK || login != "octo" {
		t.Errorf("GET /user = %d %q", code, login)
	}
	if login, ok := s.TokenLogin(tok); !ok || login != "octo" {
		t.Errorf("TokenLogin = %q, %v", login, ok)
	}
	if _, ok := s.TokenLogin("nope"); ok {
		t.Errorf("TokenLogin accepts an unknown token")
	}
	if _, ok := s.TokenLogin(""); ok {
		t.Errorf("TokenLogin accepts the empty token")
	}
}

func TestMounted(t *testing.T) {
	t.Parallel()
	s := NewUnstarted("id", "secret")
	mux := http.NewServeMux()
	mux.Handle("/", s)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	s.SetBaseURL(srv.URL)
	defer s.Close() // nothing to stop: mounted
	if s.URL != srv.URL+"/" || s.APIURL != srv.URL+"/api/v3/" {
		t.Errorf("URL, APIURL = %q, %q", s.URL, s.APIURL)
	}
	if code, _ := getUser(t, s.APIURL, "bad"); code != http.StatusUnauthorized {
		t.Errorf("GET /user with a bad token = %d, want 401", code)
	}
	s.AddRepo("Octo", "App", "octo")
	if admins, ok := s.Repo("octo", "app"); !ok || len(admins) != 1 || admins[0] != "octo" {
		t.Errorf("Repo = %v, %v; want found case-insensitively", admins, ok)
	}
	if _, ok := s.Repo("octo", "other"); ok {
		t.Errorf("Repo finds a repository never added")
	}
}
