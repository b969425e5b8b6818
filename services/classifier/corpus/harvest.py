#!/usr/bin/env python3
"""Build the seed training corpus for the task-type classifier.

Sources (see services/classifier/DATA.md and docs/research/classifier-corpus.md):
  * OpenStack sdists from PyPI: pbr ``ChangeLog`` commit subjects and reno release notes.
  * Debian ``changelog.Debian.gz`` files from binary packages (bookworm).
  * Author-typed ``CHANGELOG.md`` files from npm tarballs.

Every package version is pinned below. Downloads use the ordinary clients
(``pip download``, ``npm pack``, ``apt-get download``), so the machine needs
pip, npm, dpkg-deb and an apt index for Debian 12 (run ``apt-get update`` once).
Parsing reno notes needs PyYAML (``pip install pyyaml``); everything else is stdlib.

Usage:
  python3 services/classifier/corpus/harvest.py --work /tmp/x \
      --out services/classifier/corpus/seed.jsonl.gz

The output is deterministic: running the script twice on the same downloads
gives byte-identical output.
"""
import argparse
import collections
import glob
import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile

import yaml

# --- Pinned inputs --------------------------------------------------------

# OpenStack projects; pbr writes the whole git history's subjects into ChangeLog.
# swift ships no pbr ChangeLog but does ship reno notes.
OPENSTACK = [
    ("nova", "34.0.0"), ("neutron", "29.0.0"), ("cinder", "29.0.0"), ("keystone", "30.0.0"),
    ("ironic", "39.0.0"), ("horizon", "27.0.0"), ("glance", "33.0.0"), ("manila", "23.0.1"),
    ("octavia", "19.0.0"), ("designate", "23.0.0"), ("openstacksdk", "4.22.0"),
    ("oslo.messaging", "18.3.1"), ("python-openstackclient", "10.5.0"), ("tempest", "47.0.0"),
    ("swift", "2.38.3"),
]

# npm releases that still ship an author-typed CHANGELOG.md.
NPM = [
    ("eslint", "7.32.0"), ("eslint", "4.19.1"), ("rxjs", "7.8.2"), ("karma", "6.4.4"),
    ("zone.js", "0.16.3"), ("googleapis", "118.0.0"), ("eslint-plugin-import", "2.32.0"),
    ("@google-cloud/storage", "6.12.0"), ("axios", "1.21.1"), ("@apollo/client", "4.3.8"),
    ("standard-version", "9.5.0"), ("@commitlint/cli", "17.0.0"), ("yargs-parser", "22.0.0"),
    ("conventional-changelog-cli", "2.2.2"),
]

# Debian 12 binary packages (NAME, VERSION). For each source package the smallest
# binary that carries the changelog as a regular file (not a symlink) was chosen,
# favouring sources with long changelogs, plus libraries with many security updates.
# Versions are those in bookworm / bookworm-security at pin time; a later point
# release can retire a version from the mirror, in which case that package is
# skipped with a warning rather than silently replaced.
DEBIAN = [
    ("bc", "1.07.1-3+b1"), ("bind9-libs", "1:9.18.49-1~deb12u3"), ("binutils", "2.40-2"),
    ("bubblewrap", "0.8.0-2+deb12u1"), ("clamav-base", "1.4.6+dfsg-0+deb12u1"),
    ("cmake-data", "3.25.1-1"), ("coreutils", "9.1-1"), ("cscope", "15.9-1"),
    ("cups-common", "2.4.2-3+deb12u9"), ("curl", "7.88.1-10+deb12u15"),
    ("dbus-user-session", "1.14.10-1~deb12u1"), ("debianutils", "5.7-0.5~deb12u1"),
    ("dnsmasq-base", "2.90-4~deb12u2"), ("exim4-config", "4.96-15+deb12u10"),
    ("gettext-base", "0.21-12"), ("gir1.2-packagekitglib-1.0", "1.2.6-5+deb12u1"),
    ("git-man", "1:2.39.5-0+deb12u3"), ("gpg-wks-server", "2.2.40-1.1+deb12u2"),
    ("gsettings-desktop-schemas", "43.0-1"), ("gtk-update-icon-cache", "3.24.38-2~deb12u3"),
    ("gzip", "1.12-1"), ("haproxy", "2.6.12-1+deb12u4"),
    ("imagemagick-6-common", "8:6.9.11.60+dfsg-1.6+deb12u15"), ("less", "590-2.1~deb12u2"),
    ("libacl1", "2.3.1-3"), ("libalgorithm-diff-perl", "1.201-1"), ("libapparmor1", "3.0.8-3"),
    ("libappstream4", "0.16.1-2+b1"), ("libarchive13", "3.6.2-1+deb12u5"),
    ("libatk1.0-0", "2.46.0-5"), ("gcc-12-base", "12.2.0-14+deb12u1"), ("libattr1", "1:2.5.1-4"),
    ("libavahi-common3", "0.8-10+deb12u1"), ("libboost-iostreams1.74.0", "1.74.0+ds1-21"),
    ("libbsd0", "0.11.7-2"), ("libbz2-1.0", "1.0.8-5+b1"), ("libc-dev-bin", "2.36-9+deb12u14"),
    ("libcaca0", "0.99.beta20-3+deb12u1"), ("libcommons-io-java", "2.11.0-2"),
    ("libcryptsetup12", "2:2.6.1-4~deb12u2"), ("libcups2", "2.4.2-3+deb12u9"),
    ("libdatrie1", "0.2.13-2+b1"), ("libde265-0", "1.0.11-1+deb12u3"),
    ("libdebuginfod-common", "0.188-2.1"), ("libexif12", "0.6.24-1+deb12u1"),
    ("libfreetype6", "2.12.1+dfsg-5+deb12u4"), ("libfribidi0", "1.0.8-2.1"),
    ("libgcrypt20", "1.10.1-3+deb12u1"), ("libgd3", "2.3.3-9+deb12u1"),
    ("libgdk-pixbuf2.0-bin", "2.42.10+dfsg-1+deb12u4"), ("libgif7", "5.2.1-2.5+deb12u1"),
    ("libgirepository-1.0-1", "1.74.0-3"), ("libgit2-1.5", "1.5.1+ds-1+deb12u2"),
    ("libgl1-mesa-dev", "22.3.6-1+deb12u2"), ("libglib2.0-bin", "2.74.6-2+deb12u9"),
    ("libgmpxx4ldbl", "2:6.2.1+dfsg1-1.1"), ("libgnutls30", "3.7.9-2+deb12u7"),
    ("libgraphite2-3", "1.3.14-1+deb12u1"), ("libgs-common", "10.0.0~dfsg-11+deb12u9"),
    ("libgtest-dev", "1.12.1-0.2"), ("libgtk2.0-bin", "2.24.33-2+deb12u1"),
    ("libheif1", "1.15.1-1+deb12u1"), ("libice6", "2:1.0.10-1"), ("libidn2-dev", "2.3.3-1+b1"),
    ("libjpeg-dev", "1:2.1.5-2"), ("libjs-jquery", "3.6.1+dfsg+~3.5.14-1"),
    ("libjs-sphinxdoc", "5.3.0-4"), ("libjson-c5", "0.16-2"), ("libjsoncpp25", "1.9.5-4"),
    ("libkrb5support0", "1.20.1-2+deb12u5"), ("libksba8", "1.6.3-2"),
    ("libldap-common", "2.5.13+dfsg-5"), ("liblz4-1", "1.9.4-1"), ("libmbedcrypto7", "2.28.3-1"),
    ("libmnl0", "1.0.4-3"), ("libmodsecurity3", "3.0.9-1+deb12u2"), ("ncurses-base", "6.4-4"),
    ("libnettle8", "3.8.1-2"), ("libnspr4", "2:4.35-1"), ("libnss3-dev", "2:3.87.1-1+deb12u4"),
    ("libonig5", "6.9.8-1"), ("libopenjp2-7", "2.5.0-2+deb12u3"),
    ("libpam-cap", "1:2.66-4+deb12u3+b1"), ("libpam-modules-bin", "1.5.2-6+deb12u2"),
    ("libpangocairo-1.0-0", "1.50.12+ds-1"), ("libpng16-16", "1.6.39-2+deb12u6"),
    ("libpolkit-agent-1-0", "122-3"), ("libpoppler126", "22.12.0-2+deb12u3"),
    ("libpq-dev", "15.20-0+deb12u1"), ("libraw20", "0.20.2-2.1+deb12u2"),
    ("librhash0", "1.4.3-3"), ("librsvg2-common", "2.54.7+dfsg-1~deb12u1"),
    ("librtmp1", "2.4+20151223.gitfa8646d.1-2+b2"),
    ("libsasl2-modules-db", "2.1.28+dfsg-10+deb12u1"), ("libsdl2-2.0-0", "2.26.5+dfsg-1"),
    ("libsemanage-common", "3.4-1"), ("libslf4j-java", "1.7.32-1"), ("libsm6", "2:1.2.3-1"),
    ("libsndfile1", "1.2.0-1+deb12u1"), ("libssh-4", "0.10.6-0+deb12u3"),
    ("libssh2-1", "1.10.0-3+deb12u1"), ("libtasn1-6", "4.19.0-2+deb12u1"),
    ("libthai0", "0.1.29-1"), ("libtiff6", "4.5.0-6+deb12u4"), ("libtirpc-common", "1.3.3+ds-1"),
    ("libunbound8", "1.17.1-2+deb12u4"), ("libunistring2", "1.0-2"),
    ("libuuid1", "2.38.1-5+deb12u3"), ("libvpx7", "1.12.0-1+deb12u5"),
    ("libwayland-client0", "1.21.0-1"), ("libwebp7", "1.2.4-0.2+deb12u1"),
    ("libx11-6", "2:1.8.4-2+deb12u2"), ("libx265-199", "3.5-2+b1"), ("libxau6", "1:1.0.9-1"),
    ("libxaw7", "2:1.0.14-1"), ("libxcb-present0", "1.15-1"), ("libxcomposite1", "1:0.4.5-1"),
    ("libxcursor1", "1:1.2.1-1"), ("libxdmcp6", "1:1.1.2-3"), ("libxext6", "2:1.3.4-1+b1"),
    ("libxfixes3", "1:6.0.0-2"), ("libxft2", "2.3.6-1"), ("libxi6", "2:1.8-1+b1"),
    ("libxinerama1", "2:1.1.4-3"), ("libxml2", "2.9.14+dfsg-1.3~deb12u6"),
    ("libxmuu1", "2:1.1.3-3"), ("libxpm4", "1:3.5.12-1.1+deb12u1"),
    ("libxrandr2", "2:1.5.2-2+b1"), ("libxrender1", "1:0.9.10-1.1"),
    ("libxslt1.1", "1.1.35-1+deb12u4"), ("libxtst6", "2:1.2.3-1.1"), ("libxv1", "2:1.0.11-1.1"),
    ("libyaml-0-2", "0.2.5-1"), ("libzip4", "1.7.3-1+b1"), ("libzstd1", "1.5.4+dfsg2-5"),
    ("linux-libc-dev", "6.1.192-2"), ("llvm-14-tools", "1:14.0.6-12"),
    ("login", "1:4.13+dfsg1-1+deb12u2"), ("logsave", "1.47.0-2+b2"), ("lsof", "4.95.0-1"),
    ("make", "4.3-4.1"), ("man-db", "2.11.2-2"), ("manpages", "6.03-2"),
    ("mariadb-common", "1:10.11.19-0+deb12u1"), ("mawk", "1.3.4.20200120-3.1"),
    ("mutt", "2.2.12-0.1~deb12u2"), ("nginx-common", "1.22.1-9+deb12u11"),
    ("ntfs-3g", "1:2022.10.3-1+deb12u4"),
    ("openssh-client", "1:9.2p1-2+deb12u10"), ("openssl", "3.0.22-1~deb12u2"),
    ("patch", "2.7.6-7"), ("perl", "5.36.0-7+deb12u4"), ("php8.2-common", "8.2.36-1~deb12u1"),
    ("pkg-config", "1.8.1-1"), ("postfix", "3.7.11-0+deb12u1"), ("procmail", "3.22-27"),
    ("python3-cryptography", "38.0.4-3+deb12u1"), ("python3-dbus", "1.3.2-4+b1"),
    ("python3-django", "3:3.2.25-0+deb12u7"), ("python3-gi", "3.42.2-3+b1"),
    ("python3-jinja2", "3.1.2-1+deb12u3"), ("python3-lxml", "4.9.2-1+deb12u1"),
    ("python3-pil", "9.4.0-1.1+deb12u1"), ("python3-pip", "23.0.1+dfsg-1"),
    ("python3-requests", "2.28.1+dfsg-1"), ("python3-six", "1.16.0-4"),
    ("python3-software-properties", "0.99.30-4.1~deb12u1"),
    ("python3-urllib3", "1.26.12-1+deb12u4"), ("python3", "3.11.2-1+b1"),
    ("python3-yaml", "6.0-3+b2"), ("libpython3.11-minimal", "3.11.2-6+deb12u9"),
    ("qemu-utils", "1:7.2+dfsg-7+deb12u18+b3"), ("redis-server", "5:7.0.15-1~deb12u10"),
    ("rsync", "3.5.0+ds1-0+deb12u1"), ("ruby3.1", "3.1.7+really3.1.2-0+deb12u1"),
    ("samba-common", "2:4.17.12+dfsg-0+deb12u4"), ("screen", "4.9.0-4"),
    ("shared-mime-info", "2.2-1"), ("sqlite3", "3.40.1-2+deb12u2"),
    ("squid-common", "5.7-2+deb12u6"), ("systemd-sysv", "252.39-1~deb12u2"),
    ("sysvinit-utils", "3.06-4"), ("tar", "1.34+dfsg-1.2+deb12u1"), ("tcpdump", "4.99.3-1"),
    ("time", "1.9-0.2"), ("tmux", "3.3a-3"), ("tomcat10-common", "10.1.60-1~deb12u1"),
    ("tzdata", "2026f-0+deb12u1"), ("varnish", "7.1.1-2+deb12u1"), ("wget", "1.21.3-1+deb12u1"),
    ("wireshark-common", "4.0.17-0+deb12u3"), ("xkb-data", "2.35.1-1"),
    ("xserver-common", "2:21.1.7-3+deb12u13"), ("xtrans-dev", "1.4.0-1"),
    ("xxd", "2:9.0.1378-2+deb12u2"), ("zlib1g", "1:1.2.13.dfsg-1"),
]

# Packages whose rows form the held-out test split. Splitting by package keeps one
# project's shared vocabulary (component names, house style) out of both halves.
# The OpenStack and npm picks were chosen so that every class, including the thin
# performance and other classes, has test rows. Debian source packages are assigned
# by a stable hash instead (TEST_DEBIAN_BUCKET) because there are too many to list.
TEST_PACKAGES = {
    "openstack": ["cinder", "octavia", "designate", "oslo.messaging"],
    "npm": ["rxjs", "axios", "karma"],
}
TEST_DEBIAN_BUCKET = 5  # sha1(source) % TEST_DEBIAN_BUCKET == 0 -> test; kernel stays train
CLASS_CAP = 4600
PACKAGE_SHARE = 0.40
# Debian packaging lines are plentiful but unlike coding requests; keep them from
# crowding out the OpenStack/npm build and dependency items.
SOURCE_SHARE = {("dependency", "debian-changelog"): 0.50}
UNCAPPED = {"performance", "other"}
SEED = 20261126
MIN_LEN, MAX_LEN = 10, 10000

CLASSES = ["bug_fix", "feature", "refactor", "test", "documentation", "dependency",
           "performance", "security", "other"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --- Download -------------------------------------------------------------

def sdist_path(work, name, version):
    # pip normalises sdist file names (oslo.messaging -> oslo_messaging).
    norm = re.sub(r"[-_.]+", "_", name).lower()
    for cand in sorted(glob.glob(os.path.join(work, "pypi", "*.tar.gz"))):
        base = os.path.basename(cand).lower()
        if base in (f"{norm}-{version}.tar.gz", f"{name.lower()}-{version}.tar.gz"):
            return cand
    return None


def npm_path(work, name, version):
    base = name.lstrip("@").replace("/", "-")
    p = os.path.join(work, "npm", f"{base}-{version}.tgz")
    return p if os.path.exists(p) else None


def deb_path(work, name, version):
    # apt-get download escapes ':' in the epoch as %3a.
    v = version.replace(":", "%3a")
    hits = sorted(glob.glob(os.path.join(work, "debs", f"{name}_{v}_*.deb")))
    return hits[0] if hits else None


def download(work):
    for sub in ("pypi", "npm", "debs"):
        os.makedirs(os.path.join(work, sub), exist_ok=True)
    missing = [f"{n}=={v}" for n, v in OPENSTACK if not sdist_path(work, n, v)]
    if missing:
        log(f"pip download: {len(missing)} sdists")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", "-d", os.path.join(work, "pypi")] + missing,
                       check=True, stdout=sys.stderr)
    missing = [f"{n}@{v}" for n, v in NPM if not npm_path(work, n, v)]
    if missing:
        log(f"npm pack: {len(missing)} tarballs")
        subprocess.run(["npm", "pack", "--silent", "--pack-destination",
                        os.path.join(work, "npm")] + missing, check=True, stdout=subprocess.DEVNULL)
    missing = [f"{n}={v}" for n, v in DEBIAN if not deb_path(work, n, v)]
    if missing:
        log(f"apt-get download: {len(missing)} .debs")
        # One call per package so that a version retired from the mirror costs only that package.
        for spec in missing:
            r = subprocess.run(["apt-get", "download", "-q", spec], cwd=os.path.join(work, "debs"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                log(f"  warning: could not download {spec}: {r.stderr.strip().splitlines()[-1:]}")


# --- Cleaning -------------------------------------------------------------

MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
HASH_PAREN = re.compile(r"\(\s*`?\b[0-9a-f]{7,40}\b`?\s*\)")
BARE_HASH_START = re.compile(r"^`?[0-9a-f]{7,40}`?\s+")
ISSUE_REF = re.compile(r"\b(?:closes|closed|close|fixes|fixed|fix|refs|resolves|resolved|see)\s*:?\s*"
                       r"(?:[\w.-]+/[\w.-]+)?#\d+(?:\s*,\s*(?:[\w.-]+/[\w.-]+)?#\d+)*", re.I)
DEB_REFS = re.compile(r"\(?\b(?:closes|lp)\s*:\s*#?\d+(?:\s*,\s*#?\d+)*\)?\.?", re.I)
PAREN_ISSUE = re.compile(r"\(\s*(?:#\d+[\s,]*)+\)")
BARE_ISSUE = re.compile(r"(?<![\w&])#\d+\b")
URL = re.compile(r"<?https?://\S+>?")
EMAIL = re.compile(r"<?[\w.+-]+@[\w-]+\.[\w.-]+>?")
THANKS = re.compile(r"\(?\b(?:thanks|thank you|patch by|reported by|suggested by)\b[^()]*\)?\.?\s*$", re.I)
AT_USER = re.compile(r"\(?@[\w-]+(?:\s*,\s*@[\w-]+)*\)?")
WS = re.compile(r"\s+")
HTML_TAG = re.compile(r"</?(?:br|p|a|code|details|summary|img|sup|sub|b|i|em|strong|kbd|div|span)\b[^>]*>", re.I)
# Reference-style links ("[#123][]") leave empty brackets once their targets are gone.
EMPTY_REFS = re.compile(r"\(\s*(?:\[\]\s*,?\s*)+\)|\[\]")


def clean(text):
    text = text.replace("\\_", "_").replace("\\*", "*").replace("\\`", "`")
    text = MD_LINK.sub(r"\1", text)
    text = HASH_PAREN.sub("", text)
    text = BARE_HASH_START.sub("", text.strip())
    text = URL.sub("", text)
    text = DEB_REFS.sub("", text)
    text = ISSUE_REF.sub("", text)
    text = PAREN_ISSUE.sub("", text)
    text = BARE_ISSUE.sub("", text)
    text = EMAIL.sub("", text)
    text = AT_USER.sub("", text)
    text = THANKS.sub("", text)
    text = HTML_TAG.sub(" ", text)
    text = EMPTY_REFS.sub("", text)
    text = text.replace("**", "")
    text = re.sub(r"\(\s*[,;]?\s*\)", "", text)
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    text = WS.sub(" ", text).strip(" ,;-")
    # Changesets entries end "... in [#123](link)"; the link is gone, the preposition is not.
    text = re.sub(r"([.!?)`])\s+in$", r"\1", text)
    return text


def dedup_key(text):
    return " ".join(re.findall(r"\w+", text.lower()))


# --- Labelling ------------------------------------------------------------

# Author type prefixes: Conventional Commits ("fix(scope)!:") and eslint's "Tag:".
# They are stripped from the text so that the label is not leaked verbatim.
TYPE_PREFIX = re.compile(r"^(?P<type>[A-Za-z]+)(?:\((?P<scope>[^)]*)\))?(?P<bang>!)?:\s+")
TYPE_MAP = {
    "fix": "bug_fix", "fixes": "bug_fix", "bugfix": "bug_fix", "hotfix": "bug_fix",
    "feat": "feature", "feature": "feature", "new": "feature", "breaking": "feature",
    "docs": "documentation", "doc": "documentation",
    "perf": "performance", "refactor": "refactor", "test": "test", "tests": "test",
    "build": "dependency", "ci": "dependency", "deps": "dependency", "upgrade": "dependency",
    "security": "security", "chore": "other", "revert": "other",
}
# Types that carry no usable class: dropped rather than guessed.
TYPE_DROP = {"update", "style", "sponsors", "wip", "release"}


def author_prefix(text):
    """Return (label, rule, stripped_text, breaking) for a typed prefix, else None."""
    m = TYPE_PREFIX.match(text)
    if not m:
        return None
    t = m.group("type").lower()
    scope = (m.group("scope") or "").lower()
    rest = text[m.end():]
    if t in TYPE_DROP:
        return ("drop", None, rest, False)
    if t not in TYPE_MAP:
        return None
    label = TYPE_MAP[t]
    if t == "chore" and scope in ("deps", "deps-dev", "dependencies"):
        label = "dependency"
    breaking = bool(m.group("bang")) or t == "breaking"
    return (label, f"conventional:{t}", rest, breaking)


SCOPE = re.compile(r"^(?:\[[^\]]{1,40}\]\s*|[\w.\-/,+*]{1,40}:\s+)")


def strip_scope(text):
    # Kernel and OpenStack subjects carry component scopes ("ASoC: pcm: ", "libvirt: ").
    for _ in range(4):
        m = SCOPE.match(text)
        if not m:
            break
        text = text[m.end():]
    return text


def R(p):
    return re.compile(p, re.I)


W = r"(?:[\w.\-/'`\"]+\s+)"  # one word, for "up to N words" gaps
STRICT = [
    ("security", [R(r"CVE-\d{4}-\d+"), R(r"\bGHSA-"), R(r"\bsecurity (?:fix|issue|update|hardening)"),
                  R(r"vulnerabilit"), R(r"\b(?:XSS|CSRF|SSRF)\b"), R(r"denial of service"),
                  R(r"path traversal"), R(r"SQL injection")]),
    ("dependency", [R(r"^new upstream (?:release|version)"),
                    R(rf"^(?:update|upgrade|bump|pin)\s+{W}{{0,4}}?(?:from\s+\S+\s+)?to\s+v?\d+(?:\.\d+)+"),
                    R(r"^bump"), R(r"\bupdate (?:the )?(?:dependencies|requirements|lockfile|constraints)"),
                    R(r"\b(?:zuul|tox|grenade|nodeset|bindep|dockerfile|helm chart|github actions|travis|"
                      r"setup\.cfg|setup\.py|requirements\.txt|lower-constraints|upper-constraints|"
                      r"pyproject\.toml|package\.json|package-lock|non-voting|ci jobs?|gate jobs?)\b"),
                    R(r"\bdrop (?:support for )?py(?:thon)? ?[23]\.?\d+"),
                    R(r"\bpython ?3\.\d+ (?:support|classifiers?|jobs?)\b")]),
    ("performance", [R(r"^(?:improve|increase)\s+(?:\w+\s+){0,2}performance"), R(r"^(?:speed up|optimi[sz]e)"),
                     R(r"\bfaster\b"), R(r"\bspeed-?up\b"), R(r"O\(n\^?2\)|O\(n²\)"),
                     R(r"\breduce (?:\w+ ){0,2}(?:memory|cpu|latency|allocations?)\b")]),
    ("test", [R(rf"^(?:adds?|added|fix|improve|stabili[sz]e|skip|remove|update)\s+{W}{{0,3}}"
                r"(?:(?:unit|functional|integration|tempest|scenario|api|regression|smoke|e2e)\s+)?tests?\b"),
              R(r"^(?:adds?|added|fix|improve|stabili[sz]e|skip|remove|update)\b.*\b(?:unit|functional|integration|"
                r"scenario|regression) tests?\b"),
              R(r"^tests?\b"), R(r"^(?:stabili[sz]e|deflake)"), R(r"flaky test"), R(r"test coverage")]),
    ("documentation", [R(r"^docs?\b"), R(r"^documentation\b"),
                       R(rf"^(?:add|update|fix|clarify|improve|correct)\s+{W}{{0,2}}(?:docs?|documentation|"
                         r"docstrings?|readme|comments?|man ?pages?|api-ref|release ?notes?|typos?)\b"),
                       R(r"\btypos?\b")]),
    ("refactor", [R(r"^(?:refactor|clean ?up|simplify|rename|move|extract|consolidate|modernize)"),
                  R(r"^remove (?:unused|dead|obsolete|redundant|deprecated)")]),
    ("bug_fix", [R(r"^(?:fix|fixes|fixed|bugfix|hotfix|correct|resolve|prevent|avoid|handle)\b"),
                 R(r"\b(?:crash|crashes|segfault|regression|memory leak|race condition|deadlock|"
                   r"null pointer|off-by-one)\b")]),
    ("feature", [R(r"^(?:add|adds|implement|introduce|support|enable|allow|expose|provide|new)\b")]),
]


def strict_label(text):
    t = strip_scope(text)
    for label, pats in STRICT:
        for p in pats:
            if p.search(t):
                return label
    return None


# Debian-only pre-rules, applied before the strict rules.
DEB_PATCH_PATH = re.compile(r"^(?:d|debian)/patches/\S*:?\s*", re.I)
DEB_CI = re.compile(r"salsa|gitlab-ci|\bci\b", re.I)
DEB_AUTOPKGTEST = re.compile(r"autopkgtest|\b(?:d|debian)/tests\b", re.I)
DEB_PACKAGING = re.compile(
    r"\b(?:d|debian)/(?!patches)\S+|build-?depends|standards-version|debhelper|\bdh[_-]\w+|\bdh\b|"
    r"compat(?:ibility)? level|multi-?arch|lintian|symbols? files?|\.symbols\b|uploaders|"
    r"non-maintainer upload|team upload|\bnmu\b|\brebuild\b|binnmu|\bftbfs\b|watch file|salsa|gitlab-ci|"
    r"vcs-(?:git|browser)|maintainer (?:field|address)|\bsource format\b|\b3\.0 \(quilt\)|"
    r"\bpackaging\b|\bdebian/", re.I)
DEB_NEW_UPSTREAM = re.compile(r"^new upstream (?:release|version|stable|bugfix|point)", re.I)


DEB_PATCH_ADMIN = re.compile(r"\.(?:patch|diff)\b|\b(?:refresh|rebase|unfuzz)(?:ed)? (?:\w+ )?patch|"
                             r"^(?:new|drop|dropped|remove|removed|update|updated) (?:\w+ )?patch(?:es)?\b", re.I)


def debian_label(text):
    if re.search(r"CVE-\d{4}-\d+", text):
        return "security", "debian:cve", text
    if DEB_PATCH_ADMIN.search(text):
        # Patch bookkeeping ("Refresh foo.patch") says nothing about the change itself.
        return None, None, text
    m = DEB_PATCH_PATH.match(text)
    if m:
        # "debian/patches/foo.patch: Fix X" describes the upstream change, not packaging.
        rest = text[m.end():]
        lab = strict_label(rest)
        return (lab, f"strict:{lab}", rest) if lab else (None, None, rest)
    if DEB_CI.search(text):
        # CI configuration that merely runs autopkgtest is build plumbing, not a test change.
        return "dependency", "debian:packaging", text
    if DEB_AUTOPKGTEST.search(text):
        return "test", "debian:autopkgtest", text
    if DEB_PACKAGING.search(text):
        return "dependency", "debian:packaging", text
    if DEB_NEW_UPSTREAM.search(text):
        return "dependency", "debian:new-upstream", text
    lab = strict_label(text)
    return (lab, f"strict:{lab}", text) if lab else (None, None, text)


# --- Complexity (weak proxies; see DATA.md) --------------------------------

SIMPLE_RX = re.compile(r"\b(?:typos?|spelling|pep8|bump|bumped|rename|renamed|whitespace|docstrings?|nits?|"
                       r"trivial|standards-version|symbols? files?|uploaders)\b", re.I)
ONE_BUMP_RX = re.compile(r"^(?:update|upgrade|bump|pin)\s+\S+\s+(?:from\s+\S+\s+)?to\s+v?\d", re.I)
COMPLEX_RX = re.compile(r"\b(?:rework|reworked|rewrite|rewritten|overhaul|new (?:api|driver|service)s?|"
                        r"microversion|across|(?:db|database|schema|data) migrations?|migrate \w+ to)\b", re.I)


def complexity(text, task_type, source, rule, breaking=False):
    if breaking or rule in ("reno:upgrade", "reno:critical"):
        return "complex"
    if source == "openstack-reno" and len(text) > 500:
        return "complex"
    if SIMPLE_RX.search(text) or (task_type == "dependency" and ONE_BUMP_RX.search(text)):
        return "simple"
    if COMPLEX_RX.search(text):
        return "complex"
    return "medium"


# --- Bot and noise filters -----------------------------------------------

BOT_RX = re.compile(
    r"^(?:imported translations|import translations|updated from global requirements|"
    r"update \.gitreview|update tox_constraints_file|update master for stable|update (?:the )?upper[- ]constraints|"
    r"update (?:the )?constraints url|update url to|opendev migration patch|sync with global requirements|"
    r"add python3? ?\w* unit tests?(?: job)?$|add python 3\.\d+ unit test job|"
    r"switch to newer openstack|update hacking for|setup\.cfg: replace dashes|"
    r"release notes? for \d|\d+(?:\.\d+)+$|bump version|version bump|release \d|prepare (?:for )?release)",
    re.I)
MERGE_RX = re.compile(r"^merge\b", re.I)


def keep_text(text):
    # A trailing colon marks a header whose content sits in the sub-items.
    return not text.endswith(":") and MIN_LEN <= len(text) <= MAX_LEN and not MERGE_RX.match(text) and not BOT_RX.match(text) \
        and re.search(r"[A-Za-z]{3}", text) is not None


# --- Source A: OpenStack --------------------------------------------------

RST_ROLE = re.compile(r":[\w.:+-]+:`([^`<]*?)(?:\s*<[^>]*>)?`")
RST_LINK = re.compile(r"`([^`<]*?)\s*(?:<[^>]*>)?`__?")
RST_LITERAL = re.compile(r"``(.*?)``", re.S)


def rst_to_prose(text):
    lines = []
    skip_indent = None
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if stripped and indent <= skip_indent:
                skip_indent = None
            else:
                continue
        if stripped.startswith(".. "):
            # Directives (code-block, note, ...) carry markup or code, not prose.
            skip_indent = indent
            continue
        if stripped.endswith("::"):
            stripped = stripped[:-1]
        stripped = re.sub(r"^[*-]\s+", "", stripped)
        lines.append(stripped)
    out = " ".join(lines)
    out = RST_ROLE.sub(r"\1", out)
    out = RST_LINK.sub(r"\1", out)
    out = RST_LITERAL.sub(r"\1", out)
    out = out.replace("`", "")
    return WS.sub(" ", out).strip()


RENO_SECTIONS = {"features": "feature", "fixes": "bug_fix", "security": "security",
                 "upgrade": "dependency", "other": "other"}


def openstack_items(work):
    for name, version in OPENSTACK:
        path = sdist_path(work, name, version)
        if not path:
            log(f"  warning: missing sdist {name} {version}")
            continue
        with tarfile.open(path) as tf:
            members = sorted(tf.getmembers(), key=lambda m: m.name)
            for m in members:
                parts = m.name.split("/")
                if len(parts) == 2 and parts[1] == "ChangeLog" and m.isfile():
                    for line in tf.extractfile(m).read().decode("utf-8", "replace").splitlines():
                        if line.startswith("* "):
                            yield ("openstack-changelog", name, version, None, line[2:], None)
                elif (len(parts) == 4 and parts[1:3] == ["releasenotes", "notes"]
                      and parts[3].endswith(".yaml") and m.isfile()):
                    try:
                        doc = yaml.safe_load(tf.extractfile(m).read())
                    except yaml.YAMLError:
                        continue
                    if not isinstance(doc, dict):
                        continue
                    for section in sorted(doc):
                        if section not in RENO_SECTIONS:
                            continue
                        entries = doc[section]
                        entries = [entries] if isinstance(entries, str) else entries
                        if not isinstance(entries, list):
                            continue
                        for e in entries:
                            if isinstance(e, str):
                                yield ("openstack-reno", name, version, section, rst_to_prose(e), None)


# --- Source B: Debian -----------------------------------------------------

DEB_HEADER = re.compile(r"^\S+ \([^)]+\) [^;]*;")
DEB_ITEM = re.compile(r"^(\s+)([*+-])\s+(.*)$")


def parse_debian_changelog(text):
    items, cur = [], None
    for line in text.splitlines():
        if DEB_HEADER.match(line) or line.startswith(" -- ") or not line.strip():
            if cur:
                items.append(cur)
            cur = None
            continue
        if re.match(r"^\s+\[ .* \]\s*$", line):
            if cur:
                items.append(cur)
            cur = None
            continue
        m = DEB_ITEM.match(line)
        if m:
            if cur:
                items.append(cur)
            cur = m.group(3)
        elif cur is not None and line.startswith(" "):
            cur += " " + line.strip()
    if cur:
        items.append(cur)
    return items


def debian_items(work):
    for name, version in DEBIAN:
        path = deb_path(work, name, version)
        if not path:
            log(f"  warning: missing .deb {name} {version}")
            continue
        src = subprocess.run(["dpkg-deb", "-f", path, "Source"], capture_output=True, text=True,
                             check=True).stdout.strip().split(" ")[0] or name
        fs = subprocess.run(["dpkg-deb", "--fsys-tarfile", path], capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(fs)) as tf:
            want = f"./usr/share/doc/{name}/changelog.Debian.gz"
            member = next((m for m in tf.getmembers() if m.name == want), None)
            if member is None or not member.isfile():
                # A symlink into another package's doc directory: that package is not pinned.
                log(f"  warning: {name} has no regular changelog.Debian.gz")
                continue
            text = gzip.decompress(tf.extractfile(member).read()).decode("utf-8", "replace")
        for item in parse_debian_changelog(text):
            yield ("debian-changelog", src, version, None, item, None)


# --- Source C: npm --------------------------------------------------------

NPM_SECTIONS = [
    (R(r"^(?:bug ?fix(?:es)?|fix(?:es|ed)?)$"), "bug_fix"),
    (R(r"^(?:features?|added|new features?)$"), "feature"),
    (R(r"^performance(?: improvements?)?$"), "performance"),
    (R(r"^(?:documentation|docs)$"), "documentation"),
    (R(r"^(?:code refactoring|refactors?|refactoring)$"), "refactor"),
    (R(r"^tests?$"), "test"),
    (R(r"^(?:build system|build|continuous integration|dependencies|dependency updates)$"), "dependency"),
    (R(r"^(?:security|security fixes)$"), "security"),
    (R(r"^(?:reverts?|miscellaneous chores|chores|maintenance (?:and|&) chores)$"), "other"),
]
# Sections whose bullets are not changes (people, links, migration notes).
NPM_SKIP = R(r"contributors|^prs$|breaking|deprecat|removed|changed|^notes?$|migration")


def npm_section(heading):
    h = re.sub(r"[^\w &]+", " ", heading).strip()
    h = WS.sub(" ", h)
    if re.search(r"\d+\.\d+", h) or not h:
        return "untyped"  # a version heading starts a new release
    for rx, label in NPM_SECTIONS:
        if rx.match(h):
            return label
    if NPM_SKIP.search(h):
        return "skip"
    return "untyped"


def parse_markdown_changelog(text):
    section, cur, in_fence, out = "untyped", None, False, []
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        h = re.match(r"^#{1,6}\s*(.*)$", line)
        if h:
            if cur:
                out.append(cur)
            cur = None
            section = npm_section(h.group(1))
            continue
        b = re.match(r"^(\s*)[*-]\s+(.*)$", line)
        if b and len(b.group(1)) <= 4:
            if cur:
                out.append(cur)
            cur = (section, b.group(2))
        elif cur and line.strip() and line.startswith(" "):
            cur = (cur[0], cur[1] + " " + line.strip())
        else:
            if cur:
                out.append(cur)
            cur = None
    if cur:
        out.append(cur)
    return out


def npm_items(work):
    for name, version in NPM:
        path = npm_path(work, name, version)
        if not path:
            log(f"  warning: missing npm tarball {name} {version}")
            continue
        with tarfile.open(path) as tf:
            member = next((m for m in sorted(tf.getmembers(), key=lambda m: m.name)
                           if re.fullmatch(r"package/CHANGELOG\.md", m.name, re.I)), None)
            if member is None:
                continue
            text = tf.extractfile(member).read().decode("utf-8", "replace")
        for section, item in parse_markdown_changelog(text):
            if section != "skip":
                yield ("npm-changelog", name, version, section, item, None)


# --- Pipeline -------------------------------------------------------------

def label_item(source, section, raw):
    """Return (task_type, rule, text, breaking) or None."""
    text = raw
    if source == "npm-changelog":
        # Conventional entries often read "**scope:** subject".
        text = re.sub(r"^\*\*[^*]{1,60}:\*\*\s*", "", text.strip())
        text = re.sub(r"^`?[0-9a-f]{7,40}`?\s+", "", re.sub(r"^\[`?[0-9a-f]{7,40}`?\]\([^)]*\)\s*", "", text))
        # eslint appends the author in parentheses.
        text = re.sub(r"\s*\([^()#]*\)\s*$", "", text) if re.match(r"^[A-Z][a-z]+:", text) else text
    text = clean(text)
    if source == "openstack-reno":
        rule = f"reno:{section}"
        return RENO_SECTIONS[section], rule, text, False
    # Debian items are skipped here: kernel subjects use subsystem names such as
    # "perf:", "security:" or "docs:" as scopes, not as change types.
    ap = author_prefix(text) if source != "debian-changelog" else None
    if ap:
        label, rule, rest, breaking = ap
        if label == "drop":
            return None
        return label, rule, clean(rest), breaking
    if source == "npm-changelog" and section not in ("untyped", None):
        return section, f"section:{section}", text, False
    if source == "openstack-changelog" and re.match(r'^revert\b', text, re.I):
        return "other", "revert", text, False
    if source == "debian-changelog":
        label, rule, text = debian_label(text)
        text = clean(text)
    else:
        label = strict_label(text)
        rule = f"strict:{label}"
    if not label:
        return None
    return label, rule, text, False


def collect(work):
    rows = []
    stats = collections.Counter()
    for gen, tag in ((openstack_items, "openstack"), (debian_items, "debian"), (npm_items, "npm")):
        log(f"parsing {tag}")
        for source, package, version, section, raw, _ in gen(work):
            stats[source, "raw"] += 1
            res = label_item(source, section, raw)
            if not res:
                continue
            label, rule, text, breaking = res
            if not keep_text(text):
                continue
            stats[source, "labelled"] += 1
            rows.append({"text": text, "task_type": label,
                         "complexity": complexity(text, label, source, rule, breaking),
                         "source": source, "package": package, "version": version, "rule": rule})
    for k in sorted(stats):
        log(f"  {k[0]:22s} {k[1]:9s} {stats[k]}")
    return rows


def dedup(rows):
    groups = collections.OrderedDict()
    for r in rows:
        groups.setdefault(dedup_key(r["text"]), []).append(r)
    out, conflicts = [], 0
    for key, grp in groups.items():
        if len({r["task_type"] for r in grp}) > 1:
            conflicts += 1
            continue
        out.append(grp[0])
    log(f"dedup: {len(rows)} -> {len(out)} ({conflicts} texts dropped for conflicting labels)")
    return out


def water_fill(sizes, total, cap):
    """Per-group quotas summing to `total`, each <= min(size, cap), as even as possible."""
    quota = {k: 0 for k in sizes}
    remaining = total
    open_ = sorted(k for k in sizes if sizes[k] > 0)
    while remaining > 0 and open_:
        share = max(1, remaining // len(open_))
        nxt = []
        for k in open_:
            if remaining == 0:
                break
            add = min(share, sizes[k] - quota[k], cap - quota[k], remaining)
            quota[k] += add
            remaining -= add
            if quota[k] < min(sizes[k], cap):
                nxt.append(k)
        if len(nxt) == len(open_) and share == 0:
            break
        open_ = nxt
    return quota


def cap_class(items, cls, rng):
    by_pkg = collections.defaultdict(list)
    for r in items:
        by_pkg[r["source"], r["package"]].append(r)
    sizes = {k: len(v) for k, v in by_pkg.items()}
    if cls in UNCAPPED:
        return items
    n = min(CLASS_CAP, len(items))
    # Largest n that the per-package share cap can fill.
    while n > 0 and sum(min(s, int(PACKAGE_SHARE * n)) for s in sizes.values()) < n:
        n -= 1
    pkg_cap = int(PACKAGE_SHARE * n)
    # A source-share cap is applied by first trimming that source's package sizes.
    for (c, source), share in SOURCE_SHARE.items():
        if c != cls:
            continue
        src_keys = [k for k in sizes if k[0] == source]
        src_quota = water_fill({k: sizes[k] for k in src_keys}, int(share * n), pkg_cap)
        for k in src_keys:
            sizes[k] = src_quota[k]
        while n > 0 and sum(min(s, int(PACKAGE_SHARE * n)) for s in sizes.values()) < n:
            n -= 1
        pkg_cap = int(PACKAGE_SHARE * n)
    quota = water_fill(sizes, n, pkg_cap)
    out = []
    for k in sorted(by_pkg):
        grp = sorted(by_pkg[k], key=lambda r: r["text"])
        out.extend(rng.sample(grp, quota[k]) if quota[k] < len(grp) else grp)
    return out


def split_of(row):
    if row["source"] == "debian-changelog":
        if row["package"] == "linux":
            return "train"
        h = int(hashlib.sha1(row["package"].encode()).hexdigest(), 16)
        return "test" if h % TEST_DEBIAN_BUCKET == 0 else "train"
    fam = "openstack" if row["source"].startswith("openstack") else "npm"
    return "test" if row["package"] in TEST_PACKAGES[fam] else "train"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="download/scratch directory")
    ap.add_argument("--out", required=True, help="output .jsonl.gz path")
    ap.add_argument("--no-download", action="store_true", help="use what is already in --work")
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    if not args.no_download:
        download(work)
    rows = dedup(collect(work))
    rng = random.Random(SEED)
    by_cls = collections.defaultdict(list)
    for r in rows:
        by_cls[r["task_type"]].append(r)
    final = []
    for cls in CLASSES:
        kept = cap_class(by_cls.get(cls, []), cls, rng)
        log(f"cap {cls:14s} {len(by_cls.get(cls, [])):6d} -> {len(kept)}")
        final.extend(kept)
    for r in final:
        r["split"] = split_of(r)
    final.sort(key=lambda r: (r["source"], r["package"], r["task_type"], r["text"]))
    random.Random(SEED).shuffle(final)
    keys = ["text", "task_type", "complexity", "source", "package", "version", "rule", "split"]
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for r in final:
            gz.write((json.dumps({k: r[k] for k in keys}, ensure_ascii=False) + "\n").encode("utf-8"))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(buf.getvalue())
    table = collections.Counter((r["task_type"], r["split"]) for r in final)
    log(f"wrote {len(final)} rows to {args.out}")
    for cls in CLASSES:
        log(f"  {cls:14s} train {table[cls, 'train']:5d}  test {table[cls, 'test']:5d}")


if __name__ == "__main__":
    main()
