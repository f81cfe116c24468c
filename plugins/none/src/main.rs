fn main() {
    cni::run(&tether_none::NoNetwork)
}
