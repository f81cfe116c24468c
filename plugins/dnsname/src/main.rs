fn main() {
    cni::run(&tether_dnsname::Dnsname)
}
