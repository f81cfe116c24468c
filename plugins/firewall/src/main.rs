fn main() {
    cni::run(&tether_firewall::Firewall)
}
