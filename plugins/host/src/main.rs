fn main() {
    cni::run(&tether_host::Host)
}
