"""The control plane's certificates, made once per state directory (as kubeadm's `certs` phase does).

Every client of the API server and of etcd authenticates: components with their own client certificates (the
user names the API server's default RBAC knows: system:kube-controller-manager, system:kube-scheduler,
system:node:<name>), the API server to etcd and to the kubelets, and the aggregator with a front-proxy
certificate. Private keys are written 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 3650
# The first address of the service range: the `kubernetes` Service in `default`, as kubeadm names it.
SERVICE_CLUSTER_IP = "10.96.0.1"
APISERVER_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local")


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path

    @property
    def ca(self) -> Path:  # for a CA pair, the certificate is the bundle clients trust
        return self.cert


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _save(pair: KeyPair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    _write(pair.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), 0o600)
    _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _load(pair: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    key = serialization.load_pem_private_key(pair.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


class PKI:
    """Certificates under `<dir>`: `ca`, `front-proxy-ca`, and leaf pairs signed by them."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def pair(self, name: str) -> KeyPair:
        return KeyPair(self.dir / f"{name}.crt", self.dir / f"{name}.key")

    def ca(self, name: str = "ca") -> KeyPair:
        """A CA, made on first use and kept (every certificate and kubeconfig trusts it)."""
        pair = self.pair(name)
        if pair.cert.exists() and pair.key.exists():
            return pair
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        subject = _name(f"aifacility-{name}")
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        _save(pair, cert, key)
        return pair

    def leaf(self, name: str, cn: str, *, orgs: tuple[str, ...] = (), client: bool = True, server: bool = False,
             dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), ca: str = "ca") -> KeyPair:
        """A certificate for `cn` (O=`orgs`, the API server's groups), made once and kept."""
        pair = self.pair(name)
        if pair.cert.exists() and pair.key.exists():
            return pair
        ca_cert, ca_key = _load(self.ca(ca))
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        usages = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []) + \
                 ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        builder = (x509.CertificateBuilder().subject_name(_name(cn, orgs)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                                crl_sign=False, content_commitment=False, data_encipherment=False,
                                                key_agreement=False, encipher_only=False, decipher_only=False),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        alt: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        _save(pair, builder.sign(ca_key, hashes.SHA256()), key)
        return pair

    def service_account_key(self) -> KeyPair:
        """The key pair that signs service-account tokens (`sa.key`, `sa.pub` as kubeadm names them)."""
        pair = KeyPair(self.dir / "sa.pub", self.dir / "sa.key")
        if pair.cert.exists() and pair.key.exists():
            return pair
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(pair.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600)
        _write(pair.cert, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
        return pair
