<?php
/**
 * @file
 * Runs the hostmaster module hosting_quick_migrate outside Drupal: a stand-in of exactly the
 * Drupal and Aegir functions the module and its drush.inc call (node_load, db_select on an
 * in-memory hosting_platform/node table, t, form_set_error, form_set_value, _hosting_valid_fqdn,
 * hosting_domain_allowed, hosting_context_name, hosting_context_register, node_save,
 * drush_get_context, drush_log, dt), each recording its call. Driven by
 * test/integration/aegir-module.test.ts:
 *   php module-test.php
 * Prints one JSON object: the form, the platform query, each validation case, the pre-task
 * options and the post-task/rollback effects.
 */

// Aegir's constants (hosting_platform.module), Drupal's REQUEST_TIME
define('HOSTING_PLATFORM_DELETED', -2);
define('HOSTING_PLATFORM_LOCKED', -1);
define('HOSTING_PLATFORM_QUEUED', 0);
define('HOSTING_PLATFORM_ENABLED', 1);
define('REQUEST_TIME', 1790000000);

$GLOBALS['qm_calls'] = array();

function qm_record(array $call) {
  $GLOBALS['qm_calls'][] = $call;
}

/**
 * The hostmaster's nodes. Web server 2 is a cluster (one server node for all its fronts),
 * web server 3 another server. Site 10 is on platform 20.
 */
function qm_nodes() {
  return array(
    2 => (object) array('nid' => 2, 'vid' => 102, 'type' => 'server', 'title' => 'cluster.example.com'),
    3 => (object) array('nid' => 3, 'vid' => 103, 'type' => 'server', 'title' => 'other.example.com'),
    10 => (object) array('nid' => 10, 'vid' => 110, 'type' => 'site', 'title' => 'shop.example.com', 'platform' => 20, 'verified' => 1),
    11 => (object) array('nid' => 11, 'vid' => 111, 'type' => 'site', 'title' => 'taken.example.com', 'platform' => 21, 'verified' => 1),
    20 => (object) array('nid' => 20, 'vid' => 120, 'type' => 'platform', 'title' => 'Drupal 7.98', 'web_server' => 2, 'platform_status' => HOSTING_PLATFORM_ENABLED),
    21 => (object) array('nid' => 21, 'vid' => 121, 'type' => 'platform', 'title' => 'Drupal 7.99', 'web_server' => 2, 'platform_status' => HOSTING_PLATFORM_ENABLED),
    22 => (object) array('nid' => 22, 'vid' => 122, 'type' => 'platform', 'title' => 'Drupal 7.99 locked', 'web_server' => 2, 'platform_status' => HOSTING_PLATFORM_LOCKED),
    23 => (object) array('nid' => 23, 'vid' => 123, 'type' => 'platform', 'title' => 'Drupal 7.99 elsewhere', 'web_server' => 3, 'platform_status' => HOSTING_PLATFORM_ENABLED),
    24 => (object) array('nid' => 24, 'vid' => 124, 'type' => 'platform', 'title' => 'Atrium 2', 'web_server' => 2, 'platform_status' => HOSTING_PLATFORM_ENABLED),
    25 => (object) array('nid' => 25, 'vid' => 125, 'type' => 'platform', 'title' => 'Drupal 7.97 deleted', 'web_server' => 2, 'platform_status' => HOSTING_PLATFORM_DELETED),
    26 => (object) array('nid' => 26, 'vid' => 126, 'type' => 'platform', 'title' => 'Drupal 7.99 queued', 'web_server' => 2, 'platform_status' => HOSTING_PLATFORM_QUEUED),
  );
}

function t($string, array $args = array()) {
  // Drupal's %placeholder wraps in <em>; kept plain here
  return strtr($string, $args);
}

function dt($string, array $args = array()) {
  return strtr($string, $args);
}

function node_load($nid) {
  $nodes = qm_nodes();
  return isset($nodes[$nid]) ? clone $nodes[$nid] : FALSE;
}

function node_save($node) {
  qm_record(array('fn' => 'node_save', 'node' => (array) $node));
}

function drush_log($message, $type = 'notice') {
  qm_record(array('fn' => 'drush_log', 'type' => $type, 'message' => $message));
}

function &drush_get_context($context) {
  if (!isset($GLOBALS['qm_context'][$context])) {
    $GLOBALS['qm_context'][$context] = NULL;
  }
  return $GLOBALS['qm_context'][$context];
}

function form_set_error($name = NULL, $message = '') {
  $GLOBALS['qm_form_errors'][$name] = $message;
}

/** Drupal's form_set_value: sets the value at the element's #parents. */
function form_set_value($element, $value, &$form_state) {
  $ref =& $form_state['values'];
  foreach ($element['#parents'] as $parent) {
    $ref =& $ref[$parent];
  }
  $ref = $value;
}

/** hosting.module's check, as in Aegir 3. */
function _hosting_valid_fqdn($fqdn) {
  return (bool) preg_match("/^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.?)+$/i", $fqdn);
}

/** hosting_site's hook: a name another site (or alias) has is not allowed; the site's own is. */
function hosting_domain_allowed($url, array $params = array()) {
  qm_record(array('fn' => 'hosting_domain_allowed', 'url' => $url, 'params' => $params));
  foreach (qm_nodes() as $node) {
    if ($node->type == 'site' && $node->title == $url && (!isset($params['nid']) || $params['nid'] != $node->nid)) {
      return FALSE;
    }
  }
  return TRUE;
}

function hosting_context_name($nid) {
  $node = node_load($nid);
  return '@' . ($node->type == 'platform' ? 'platform_' . preg_replace('/[^a-z0-9]/', '', strtolower($node->title)) : $node->title);
}

function hosting_context_register($nid, $name) {
  qm_record(array('fn' => 'hosting_context_register', 'nid' => $nid, 'name' => $name));
}

/**
 * db_select on the hostmaster's tables: hosting_platform (nid, vid, status, web_server) joined to
 * node (nid, vid, title). Records the query it was given; runs it on qm_nodes().
 */
class QmSelect {
  public $tables = array();
  public $joins = array();
  public $fields = array();
  public $conditions = array();
  public $order = array();

  public function __construct($table, $alias) {
    $this->tables[$alias] = $table;
  }

  public function join($table, $alias, $on) {
    $this->joins[] = array('table' => $table, 'alias' => $alias, 'on' => $on);
    $this->tables[$alias] = $table;
    return $alias;
  }

  public function fields($alias, array $fields) {
    foreach ($fields as $f) {
      $this->fields[] = "$alias.$f";
    }
    return $this;
  }

  public function condition($field, $value, $op = '=') {
    $this->conditions[] = array($field, $op, $value);
    return $this;
  }

  public function orderBy($field, $direction = 'ASC') {
    $this->order[] = array($field, $direction);
    return $this;
  }

  /** One row per platform node, its columns as "alias.column". */
  private function rows() {
    $p = array_search('hosting_platform', $this->tables);
    $n = array_search('node', $this->tables);
    $rows = array();
    foreach (qm_nodes() as $node) {
      if ($node->type != 'platform') {
        continue;
      }
      $rows[] = array(
        "$p.nid" => $node->nid, "$p.vid" => $node->vid, "$p.status" => $node->platform_status, "$p.web_server" => $node->web_server,
        "$n.nid" => $node->nid, "$n.vid" => $node->vid, "$n.title" => $node->title,
      );
    }
    return $rows;
  }

  public function execute() {
    $GLOBALS['qm_queries'][] = array('tables' => $this->tables, 'joins' => $this->joins, 'fields' => $this->fields, 'conditions' => $this->conditions, 'order' => $this->order);
    $rows = array();
    foreach ($this->rows() as $row) {
      foreach ($this->conditions as $c) {
        list($field, $op, $value) = $c;
        if (!array_key_exists($field, $row)) {
          throw new Exception("unknown column $field");
        }
        $ok = $op == '=' ? $row[$field] == $value : ($op == '<>' ? $row[$field] != $value : NULL);
        if ($ok === NULL) {
          throw new Exception("unsupported operator $op");
        }
        if (!$ok) {
          continue 2;
        }
      }
      $rows[] = $row;
    }
    foreach (array_reverse($this->order) as $o) {
      list($field, $dir) = $o;
      usort($rows, function ($a, $b) use ($field, $dir) {
        $c = strcmp((string) $a[$field], (string) $b[$field]);
        return $dir == 'DESC' ? -$c : $c;
      });
    }
    $fields = $this->fields;
    return new QmResult(array_map(function ($row) use ($fields) {
      return array_map(function ($f) use ($row) {
        return $row[$f];
      }, $fields);
    }, $rows));
  }
}

class QmResult {
  private $rows;

  public function __construct(array $rows) {
    $this->rows = $rows;
  }

  public function fetchAllKeyed($key = 0, $value = 1) {
    $out = array();
    foreach ($this->rows as $row) {
      $out[$row[$key]] = $row[$value];
    }
    return $out;
  }
}

function db_select($table, $alias = NULL, array $options = array()) {
  return new QmSelect($table, $alias);
}

require __DIR__ . '/../../deploy/aegir/hosting_quick_migrate/hosting_quick_migrate.module';
require __DIR__ . '/../../deploy/aegir/hosting_quick_migrate/hosting_quick_migrate.drush.inc';

$out = array();
$site = node_load(10);

// hooks
$tasks = hosting_quick_migrate_hosting_tasks();
$out['tasks'] = array_keys($tasks['site']);
$out['permissions'] = array_keys(hosting_quick_migrate_permission());

// 1. the form, as hosting_task_confirm_form puts it under 'parameters'
$GLOBALS['qm_queries'] = array();
$fields = hosting_task_quick_migrate_form($site);
$out['form'] = $fields;
// the options in their PHP order (JSON object keys that are numbers lose it in JavaScript)
$out['form_options'] = array_map(NULL, array_map('strval', array_keys($fields['target_platform']['#options'])), array_values($fields['target_platform']['#options']));
$out['query'] = $GLOBALS['qm_queries'][0];
// a site whose platform has no other on its server
$lonely = (object) array('nid' => 12, 'type' => 'site', 'title' => 'lonely.example.com', 'platform' => 23);
$out['form_lonely'] = hosting_task_quick_migrate_form($lonely);

// 2. validation
function qm_validate($site, array $parameters) {
  $form = array('parameters' => array('#tree' => TRUE, '#node' => $site) + hosting_task_quick_migrate_form($site));
  foreach (element_children_stand_in($form['parameters']) as $key) {
    $form['parameters'][$key]['#parents'] = array('parameters', $key);
  }
  $form_state = array('values' => array('parameters' => $parameters));
  $GLOBALS['qm_form_errors'] = array();
  hosting_task_quick_migrate_form_validate($form, $form_state);
  return array('errors' => (object) $GLOBALS['qm_form_errors'], 'values' => $form_state['values']['parameters']);
}

function element_children_stand_in(array $element) {
  return array_values(array_filter(array_keys($element), function ($k) {
    return $k === '' || $k[0] !== '#';
  }));
}

$cases = array(
  'none' => array('new_uri' => 'shop.example.com'),
  'empty' => array('target_platform' => '', 'new_uri' => 'shop.example.com'),
  'current' => array('target_platform' => '20', 'new_uri' => 'shop.example.com'),
  'other_server' => array('target_platform' => '23', 'new_uri' => 'shop.example.com'),
  'locked' => array('target_platform' => '22', 'new_uri' => 'shop.example.com'),
  'deleted' => array('target_platform' => '25', 'new_uri' => 'shop.example.com'),
  'queued' => array('target_platform' => '26', 'new_uri' => 'shop.example.com'),
  'unknown' => array('target_platform' => '999', 'new_uri' => 'shop.example.com'),
  'valid' => array('target_platform' => '21', 'new_uri' => 'shop.example.com'),
  'valid_blank_uri' => array('target_platform' => '24', 'new_uri' => '  '),
  'valid_new_uri' => array('target_platform' => '21', 'new_uri' => '  New.Example.COM '),
  'invalid_uri' => array('target_platform' => '21', 'new_uri' => 'bad_name!.example.com'),
  'taken_uri' => array('target_platform' => '21', 'new_uri' => 'taken.example.com'),
);
$out['validate'] = array();
foreach ($cases as $name => $parameters) {
  $out['validate'][$name] = qm_validate($site, $parameters);
}

// the pre-task hook: the backend's options
function qm_task($task_args) {
  $task = (object) array('nid' => 50, 'task_type' => 'quick_migrate', 'ref' => node_load(10), 'task_args' => $task_args, 'options' => array());
  return $task;
}
$out['pre'] = array();
foreach (array('same_uri' => array('target_platform' => '21', 'new_uri' => 'shop.example.com'), 'new_uri' => array('target_platform' => '21', 'new_uri' => 'new.example.com')) as $name => $args) {
  $GLOBALS['qm_context']['HOSTING_TASK'] = qm_task($args);
  drush_hosting_quick_migrate_pre_hosting_task();
  $out['pre'][$name] = $GLOBALS['qm_context']['HOSTING_TASK']->options;
}
// another task type is left alone
$other = qm_task(array('target_platform' => '21'));
$other->task_type = 'migrate';
$GLOBALS['qm_context']['HOSTING_TASK'] = $other;
drush_hosting_quick_migrate_pre_hosting_task();
$out['pre']['other_task'] = (object) $GLOBALS['qm_context']['HOSTING_TASK']->options;

// 3. the post-task hook (success) and the rollback hook (failure)
function qm_run($hook, $task_args) {
  $GLOBALS['qm_calls'] = array();
  $task = qm_task($task_args);
  $before = (array) $task->ref;
  $hook($task, array('context' => array()));
  return array('calls' => $GLOBALS['qm_calls'], 'ref_before' => $before, 'ref_after' => (array) $task->ref);
}
$out['post'] = array(
  'success' => qm_run('hosting_quick_migrate_post_hosting_quick_migrate_task', array('target_platform' => '21', 'new_uri' => 'shop.example.com')),
  'success_renamed' => qm_run('hosting_quick_migrate_post_hosting_quick_migrate_task', array('target_platform' => '21', 'new_uri' => 'new.example.com')),
  'rollback' => qm_run('hosting_quick_migrate_hosting_quick_migrate_task_rollback', array('target_platform' => '21', 'new_uri' => 'new.example.com')),
);

echo json_encode($out, JSON_UNESCAPED_SLASHES), "\n";
