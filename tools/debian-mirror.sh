# The machine's Debian mirror (deb822 .sources or one-line lists), for the
# private apt configurations of tools/gen-vmlinux.sh, tools/vm/fetch.sh and
# tools/vm/root-arm64.sh. Sourced.
mirror() {
  local uri
  uri=$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '{print $2}' | grep -v security | head -1 || true)
  if [[ -z $uri ]]; then
    uri=$(grep -hoE '^deb +(\[[^]]*\] +)?[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '{print $NF}' | grep -v security | head -1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}
