package auth

import (
	"crypto/md5"
	"encoding/hex"
)

// md5Hex returns the lowercase hex md5 of the concatenation of parts.
func md5Hex(parts ...string) string {
	h := md5.New()
	for _, p := range parts {
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// md5PasswordHash returns the hash PostgreSQL stores for md5 passwords:
// "md5" + md5hex(password + user).
func md5PasswordHash(password, user string) string {
	return "md5" + md5Hex(password, user)
}

// md5Response returns what a client sends in answer to
// AuthenticationMD5Password: "md5" + md5hex(md5hex(password + user) + salt),
// computed from the stored hash ("md5" + md5hex(password + user)).
func md5Response(hash string, salt [4]byte) string {
	return "md5" + md5Hex(hash[len("md5"):], string(salt[:]))
}
