fn main() {
    cni::run(&tether_container::Container)
}
