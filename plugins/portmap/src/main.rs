fn main() {
    cni::run(&tether_portmap::Portmap)
}
