//! JWT issuers for tests: keys made in the test (RSA from a fixed test
//! key, since ring cannot generate RSA), their JWKS, and tokens they sign.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair};
use serde_json::{Value, json};

/// A 2048-bit RSA key (PKCS#1 DER) used only by tests.
const RSA_KEY: &[u8] = include_bytes!("jwt_rsa2048.der");

/// One signing key and its public JWK.
pub struct Signer {
    pub alg: Algorithm,
    pub kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl Signer {
    /// A key for `alg` (RS256/384/512, ES256/384, EdDSA) named `kid`.
    pub fn new(alg: Algorithm, kid: &str) -> Self {
        let rng = SystemRandom::new();
        let name = format!("{alg:?}");
        let (encoding, mut jwk) = match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                let pair = signature::RsaKeyPair::from_der(RSA_KEY).expect("test RSA key");
                let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
                (
                    EncodingKey::from_rsa_der(RSA_KEY),
                    json!({"kty": "RSA", "n": B64.encode(public.n), "e": B64.encode(public.e)}),
                )
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let (ring_alg, crv, len) = if alg == Algorithm::ES256 {
                    (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32)
                } else {
                    (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48)
                };
                let pkcs8 =
                    signature::EcdsaKeyPair::generate_pkcs8(ring_alg, &rng).expect("EC key");
                let pair = signature::EcdsaKeyPair::from_pkcs8(ring_alg, pkcs8.as_ref(), &rng)
                    .expect("EC key");
                // Uncompressed point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                let (x, y) = point[1..].split_at(len);
                (
                    EncodingKey::from_ec_der(pkcs8.as_ref()),
                    json!({"kty": "EC", "crv": crv, "x": B64.encode(x), "y": B64.encode(y)}),
                )
            }
            Algorithm::EdDSA => {
                let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key");
                let pair =
                    signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key");
                (
                    EncodingKey::from_ed_der(pkcs8.as_ref()),
                    json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(pair.public_key().as_ref())}),
                )
            }
            other => panic!("no test signer for {other:?}"),
        };
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(name);
        jwk["use"] = json!("sig");
        Self {
            alg,
            kid: kid.into(),
            encoding,
            jwk,
        }
    }

    pub fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// A token over `claims`, with this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

/// A JWKS document holding these keys.
pub fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token with an altered signature (still well-formed).
pub fn tamper(token: &str) -> String {
    let (head, sig) = token.rsplit_once('.').expect("a JWS");
    let mut bytes = B64.decode(sig).expect("base64url signature");
    bytes[0] ^= 1;
    format!("{head}.{}", B64.encode(bytes))
}
