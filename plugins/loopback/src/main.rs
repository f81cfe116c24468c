fn main() {
    cni::run(&tether_loopback::Loopback)
}
