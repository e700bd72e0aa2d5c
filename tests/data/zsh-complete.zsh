# zsh -f zsh-complete.zsh FPATH_DIR OUT LINE...: each LINE completed (TAB) in an interactive zsh on a
# pseudo-terminal; what the completion functions offered goes to OUT, "--" after each line.
zmodload zsh/zpty || exit 2
fdir=$1 out=$2
shift 2
: >> $out
zpty z zsh -f -i
zpty -w z "PS1=''; fpath=($fdir \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'compadd () { local -a __h; builtin compadd -A __h "$@"; (( $#__h )) && print -rl -- $__h >> '"$out"'; builtin compadd "$@" }'
zpty -w z "zstyle ':completion:*' menu no"
zpty -w z "echo READY"
zpty -r z got "*READY*"
zpty -r z got "*READY*"
integer n=0
for line in "$@"; do
  (( n++ ))
  integer before=$(wc -c < $out)
  zpty -w -n z "$line"$'\t'
  # the next keys only once the completion has offered something (up to 10 s): typed ahead,
  # they could reach zle before the completion's matches were added
  for i in {1..200}; do
    (( $(wc -c < $out) > before )) && break
    sleep 0.05
  done
  sleep 0.1
  zpty -w z $'\C-e\C-u'"print -r -- -- >> $out; echo DONE$n"
  zpty -r z got "*DONE$n*"
  zpty -r z got "*DONE$n*"
done
zpty -d z
