#!/usr/bin/env bash
# Installs the system tools the test suite uses when they are missing (root on Debian):
# setfacl (ACL round trips), btrfs-progs (real snapshot tests), chromium (dashboard tests).
# Without them those tests skip with a reason, unless ROOST_TEST_REQUIRE names them (CI).
set -u
need=()
command -v setfacl >/dev/null 2>&1 || need+=(acl)
command -v mkfs.btrfs >/dev/null 2>&1 || need+=(btrfs-progs)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing test tools: ${need[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") \
        >/dev/null 2>&1 || echo "could not install ${need[*]}; the tests that need them will skip"
fi
exit 0
