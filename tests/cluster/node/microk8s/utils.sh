#!/usr/bin/env bash
# The test bed's $SNAP/actions/common/utils.sh: the functions of microk8s's own that its
# certificate tools use, copied verbatim from
# canonical/microk8s:microk8s-resources/actions/common/utils.sh@d099c907 (line numbers there
# beside each), except where a comment says otherwise.

# l.1231-1239
is_strict() {
  # Return 0 if we are in strict mode
  if $SNAP/bin/cat $SNAP/meta/snap.yaml | $SNAP/bin/grep confinement | $SNAP/bin/grep -q strict
  then
    return 0
  else
    return 1
  fi
}

# l.1292-1298
exit_if_not_root() {
  # test if we run with sudo
  if (is_strict) && [ "$EUID" -ne 0 ]
  then echo "Elevated permissions are needed for this command. Please use sudo."
    exit 1
  fi
}

# l.1388-1413, reduced: PATH as upstream sets it, but not LD_LIBRARY_PATH or PYTHONPATH. A
# real snap's $SNAP/lib and $SNAP/usr/lib hold its base's libraries, consistent with its own
# python3; here $SNAP/lib holds the host's (the bundled dqlite and openssl, run through their
# own loader), which the node's Debian 11 python3 and bash cannot load.
use_snap_env() {
  # Configure PATH, LD_LIBRARY_PATH and PYTHONPATH
  export PATH="$SNAP/usr/bin:$SNAP/bin:$SNAP/usr/sbin:$SNAP/sbin:$REAL_PATH"

  # Python configuration
  export PYTHONNOUSERSITE=false

  # NOTE(neoaggelos/2023-08-14):
  # we cannot list system locales from snap. instead, we attempt
  # well-known locales for Ubuntu/Debian/CentOS and check whether
  # they are available on the system.
  # if they are, set them for the current shell.
  for locale in C.UTF-8 en_US.UTF-8 en_US.utf8; do
    if [ -z "$(export LC_ALL=$locale 2>&1)" ]; then
      export LC_ALL="${LC_ALL:-$locale}"
      export LANG="${LC_ALL:-$locale}"
      break
    fi
  done

  # Configure XDG_RUNTIME_DIR
  export XDG_RUNTIME_DIR="${SNAP_COMMON}/run"
  mkdir -p "${XDG_RUNTIME_DIR}"
}

# l.569-588, but for `hostname -i` in place of `hostname -I`: the machines share the host
# network, where `hostname -I` lists the host's own addresses, the same on every node, and
# leaves out the node's address (127.0.1.x, a loopback alias); `hostname -i` gives the address
# the node's name resolves to (/etc/hosts), the node's own.
get_ips() {
    local IP_ADDR="$($SNAP/bin/hostname -i | $SNAP/bin/sed 's/169\.254\.[0-9]\{1,3\}\.[0-9]\{1,3\}//g')"
    # Retrieve all IPs from CNI interfaces. These will need to be ignored.
    CNI_IPS=""
    for CNI_INTERFACE in vxlan.calico flannel.1 cni0 ovn0; do
        CNI_IP="$($SNAP/sbin/ip -o -4 addr list "$CNI_INTERFACE" 2>/dev/null | $SNAP/bin/grep -v 'inet 169.254' | $SNAP/usr/bin/gawk '{print $4}' | $SNAP/usr/bin/cut -d/ -f1 | head -1)"
        CNI_IPS="/$CNI_IP/$CNI_IPS"
    done

    if [[ -z "$IP_ADDR" ]]; then
        echo "none"
    else
        local ips="";
        for ip in $IP_ADDR; do
            # Append IP address only iff not in cni IP addresses
            (echo "$CNI_IPS" | $SNAP/bin/grep -q "/$ip/") || ips+="${ips:+ }$ip";
        done
        echo "$ips"
    fi
}

# l.590-598
gen_server_cert() (
    "${SNAP}/openssl.wrapper" req -new -sha256 -key ${SNAP_DATA}/certs/server.key -out ${SNAP_DATA}/certs/server.csr -config ${SNAP_DATA}/certs/csr.conf
    "${SNAP}/openssl.wrapper" x509 -req -sha256 -in ${SNAP_DATA}/certs/server.csr -CA ${SNAP_DATA}/certs/ca.crt -CAkey ${SNAP_DATA}/certs/ca.key -CAcreateserial -out ${SNAP_DATA}/certs/server.crt -days 365 -extensions v3_ext -extfile ${SNAP_DATA}/certs/csr.conf
)

gen_proxy_client_cert() (
    "${SNAP}/openssl.wrapper" req -new -sha256 -key ${SNAP_DATA}/certs/front-proxy-client.key -out ${SNAP_DATA}/certs/front-proxy-client.csr -config <(sed '/^prompt = no/d' ${SNAP_DATA}/certs/csr.conf) -subj "/CN=front-proxy-client"
    "${SNAP}/openssl.wrapper" x509 -req -sha256 -in ${SNAP_DATA}/certs/front-proxy-client.csr -CA ${SNAP_DATA}/certs/front-proxy-ca.crt -CAkey ${SNAP_DATA}/certs/front-proxy-ca.key -CAcreateserial -out ${SNAP_DATA}/certs/front-proxy-client.crt -days 365 -extensions v3_ext -extfile ${SNAP_DATA}/certs/csr.conf
)

# l.683-746
produce_certs() {
    # Generate RSA keys if not yet
    for key in serviceaccount.key ca.key server.key front-proxy-ca.key front-proxy-client.key; do
        if ! [ -f ${SNAP_DATA}/certs/$key ]; then
            "${SNAP}/openssl.wrapper" genrsa -out ${SNAP_DATA}/certs/$key 2048
        fi
    done

    # Generate apiserver CA
    if ! [ -f ${SNAP_DATA}/certs/ca.crt ]; then
        "${SNAP}/openssl.wrapper" req -x509 -new -sha256 -nodes -days 3650 \
            -key ${SNAP_DATA}/certs/ca.key \
            -subj "/CN=10.152.183.1" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash" \
            -addext "authorityKeyIdentifier=keyid:always,issuer" \
            -out ${SNAP_DATA}/certs/ca.crt
    fi

    # Generate front proxy CA
    if ! [ -f ${SNAP_DATA}/certs/front-proxy-ca.crt ]; then
        "${SNAP}/openssl.wrapper" req -x509 -new -sha256 -nodes -days 3650 \
            -key ${SNAP_DATA}/certs/front-proxy-ca.key \
            -subj "/CN=front-proxy-ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash" \
            -addext "authorityKeyIdentifier=keyid:always,issuer" \
            -out ${SNAP_DATA}/certs/front-proxy-ca.crt
    fi

    # Produce certificates based on the rendered csr.conf.rendered.
    # The file csr.conf.rendered is compared with csr.conf to determine if a regeneration of the certs must be done.
    #
    # Returns
    #  0 if no change
    #  1 otherwise.

    render_csr_conf
    if ! [ -f "${SNAP_DATA}/certs/csr.conf" ]; then
        echo "changeme" >  "${SNAP_DATA}/certs/csr.conf"
    fi

    local force
    if ! "${SNAP}/usr/bin/cmp" -s "${SNAP_DATA}/certs/csr.conf.rendered" "${SNAP_DATA}/certs/csr.conf"; then
        force=true
        $SNAP/bin/cp ${SNAP_DATA}/certs/csr.conf.rendered ${SNAP_DATA}/certs/csr.conf
    else
        force=false
    fi

    if $force; then
        gen_server_cert
        gen_proxy_client_cert
        echo "1"
    elif [ ! -f "${SNAP_DATA}/certs/front-proxy-client.crt" ] ||
         [ "$("${SNAP}/openssl.wrapper" < ${SNAP_DATA}/certs/front-proxy-client.crt x509 -noout -issuer)" == "issuer=CN = 127.0.0.1" ]; then
        gen_proxy_client_cert
        echo "1"
    else
        echo "0"
    fi
}

# l.775-778
refresh_csr_conf() {
    render_csr_conf
    $SNAP/bin/cp ${SNAP_DATA}/certs/csr.conf.rendered ${SNAP_DATA}/certs/csr.conf
}

# l.798-820
render_csr_conf() {
    # Render csr.conf.template to csr.conf.rendered

    local IP_ADDRESSES="$(get_ips)"

    $SNAP/bin/cp ${SNAP_DATA}/certs/csr.conf.template ${SNAP_DATA}/certs/csr.conf.rendered
    if ! [ "$IP_ADDRESSES" == "127.0.0.1" ] && ! [ "$IP_ADDRESSES" == "none" ]
    then
        local ips='' sep=''
        local -i i=3
        for IP_ADDR in $(echo "$IP_ADDRESSES"); do
            local ip_id="IP.$((i++))"
	    while $SNAP/bin/grep '^'"${ip_id}" ${SNAP_DATA}/certs/csr.conf.template > /dev/null ; do
              ip_id="IP.$((i++))"
            done
            ips+="${sep}${ip_id} = ${IP_ADDR}"
            sep='\n'
        done
        "$SNAP/bin/sed" -i "s/#MOREIPS/${ips}/g" ${SNAP_DATA}/certs/csr.conf.rendered
    else
        "$SNAP/bin/sed" -i 's/#MOREIPS//g' ${SNAP_DATA}/certs/csr.conf.rendered
    fi
}
