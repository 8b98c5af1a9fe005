fn main() {
    println!("ferrolb: under construction");
}
